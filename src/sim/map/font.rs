//! Text as strokes: the Hershey Simplex font (public domain), built into
//! the binary, so a map's text looks the same everywhere and needs no
//! system font to render.

use std::fmt::Write;

/// Appends `v` with one decimal (never `-0.0`): every number of a map's
/// SVG is written so.
pub fn num(out: &mut String, v: f64) {
    let r = (v * 10.0).round() / 10.0;
    let r = if r == 0.0 { 0.0 } else { r };
    let _ = write!(out, "{r:.1}");
}

/// `assets/font/simplex.txt`: per line a character code, its advance and
/// its strokes (`;`-separated lists of `x,y`, y down, baseline 0, cap
/// height 21).
const SIMPLEX: &str = include_str!("../../../assets/font/simplex.txt");

/// The font's cap height, in its units.
const CAP: f64 = 21.0;

struct Glyph {
    advance: f64,
    strokes: Vec<Vec<(f64, f64)>>,
}

/// Printable ASCII; anything else is drawn as `?`.
pub struct Font {
    glyphs: Vec<Glyph>,
}

impl Font {
    pub fn load() -> Result<Font, String> {
        let mut glyphs: Vec<Glyph> = Vec::new();
        for (n, line) in SIMPLEX.lines().enumerate() {
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let bad = || format!("built-in font, line {}", n + 1);
            let mut parts = line.splitn(3, ' ');
            let code: usize = parts.next().and_then(|c| c.parse().ok()).ok_or_else(bad)?;
            let advance: f64 = parts.next().and_then(|a| a.parse().ok()).ok_or_else(bad)?;
            if code != 32 + glyphs.len() {
                return Err(bad());
            }
            let mut strokes = Vec::new();
            for stroke in parts
                .next()
                .unwrap_or("")
                .split(';')
                .filter(|s| !s.is_empty())
            {
                let mut pts = Vec::new();
                for pair in stroke.split(' ') {
                    let (x, y) = pair.split_once(',').ok_or_else(bad)?;
                    pts.push((x.parse().map_err(|_| bad())?, y.parse().map_err(|_| bad())?));
                }
                strokes.push(pts);
            }
            glyphs.push(Glyph { advance, strokes });
        }
        if glyphs.len() != 95 {
            return Err(format!("built-in font: {} glyphs, not 95", glyphs.len()));
        }
        Ok(Font { glyphs })
    }

    fn glyph(&self, c: char) -> &Glyph {
        let at = |c: char| {
            (c as usize)
                .checked_sub(32)
                .and_then(|i| self.glyphs.get(i))
        };
        at(c).or_else(|| at('?')).unwrap_or(&self.glyphs[0])
    }

    /// The width of `text` at cap height `size`.
    pub fn width(&self, text: &str, size: f64) -> f64 {
        text.chars().map(|c| self.glyph(c).advance).sum::<f64>() * size / CAP
    }

    /// Path data (`M`/`L`) for `text` with its baseline starting at `x, y`,
    /// cap height `size`.
    pub fn path(&self, text: &str, x: f64, y: f64, size: f64, out: &mut String) {
        let k = size / CAP;
        let mut at = x;
        for c in text.chars() {
            let g = self.glyph(c);
            for stroke in &g.strokes {
                for (i, &(gx, gy)) in stroke.iter().enumerate() {
                    out.push(if i == 0 { 'M' } else { 'L' });
                    num(out, at + gx * k);
                    out.push(' ');
                    num(out, y + gy * k);
                }
            }
            at += g.advance * k;
        }
    }

    /// `text` cut into lines no wider than `max` at cap height `size`
    /// (a word wider than that gets a line of its own).
    pub fn wrap(&self, text: &str, size: f64, max: f64) -> Vec<String> {
        let mut lines: Vec<String> = Vec::new();
        let mut cur = String::new();
        for word in text.split(' ') {
            let next = if cur.is_empty() {
                word.to_string()
            } else {
                format!("{cur} {word}")
            };
            if !cur.is_empty() && self.width(&next, size) > max {
                lines.push(std::mem::replace(&mut cur, word.to_string()));
            } else {
                cur = next;
            }
        }
        if !cur.is_empty() {
            lines.push(cur);
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simplex_loads_and_measures() {
        let f = Font::load().expect("built-in font");
        // "A" advances 18 units: 18 px at cap height 21.
        assert_eq!(f.width("A", 21.0), 18.0);
        assert_eq!(f.width("é", 21.0), f.width("?", 21.0));
        let mut p = String::new();
        f.path("I", 0.0, 21.0, 21.0, &mut p);
        assert_eq!(p, "M4.0 0.0L4.0 21.0");
        assert_eq!(
            f.wrap("aa bb cc", 21.0, f.width("aa bb", 21.0)),
            ["aa bb", "cc"]
        );
    }
}
