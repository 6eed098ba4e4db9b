//! The map as SVG (every number written with one decimal, every list in a
//! fixed order), and as PNG rendered from that SVG by resvg.

use std::fmt::Write;

use super::font::{num, Font};
use super::world::{countries, outline, project, x_max, y_max};
use super::{Entry, Panel, CELL, SPLIT};

/// Where a panel's map goes: its top left corner and its scale.
struct Frame {
    x: f64,
    y: f64,
    k: f64,
}

impl Frame {
    fn at(&self, (px, py): (f64, f64)) -> (f64, f64) {
        (
            self.x + (px + x_max()) * self.k,
            self.y + (y_max() - py) * self.k,
        )
    }

    /// A closed ring as path data (repeated points dropped as written).
    fn ring(&self, ring: &[(f64, f64)], out: &mut String) {
        let mut last = String::new();
        let mut cur = String::new();
        let mut n = 0;
        let start = out.len();
        for &p in ring {
            let (x, y) = self.at(p);
            cur.clear();
            num(&mut cur, x);
            cur.push(' ');
            num(&mut cur, y);
            if cur == last {
                continue;
            }
            out.push(if n == 0 { 'M' } else { 'L' });
            out.push_str(&cur);
            std::mem::swap(&mut cur, &mut last);
            n += 1;
        }
        if n < 3 {
            out.truncate(start);
        } else {
            out.push('Z');
        }
    }
}

const INK: &str = "#222222";

/// Text as a stroked path.
fn text(font: &Font, out: &mut String, s: &str, x: f64, y: f64, size: f64) {
    out.push_str("<path fill=\"none\" stroke=\"");
    out.push_str(INK);
    out.push_str("\" stroke-width=\"");
    num(out, (size / 12.0).max(0.8));
    out.push_str("\" stroke-linecap=\"round\" stroke-linejoin=\"round\" d=\"");
    font.path(s, x, y, size, out);
    out.push_str("\"/>\n");
}

/// `s` as an XML attribute value's text.
fn attr(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

/// The SVG document, its width and height.
pub fn svg(
    title: &str,
    panels: &[Panel],
    legend: &[Entry],
    no_data: usize,
    width: u32,
) -> Result<(String, u32, u32), String> {
    let font = Font::load()?;
    let world = countries()?;
    let w = f64::from(width);
    let margin = (w * 0.012).round().max(4.0);
    let size = (w * 0.0085).clamp(7.0, 24.0);
    let gap = (w * 0.02).round();
    let n = panels.len().max(1) as f64;
    let pw = (w - 2.0 * margin - (n - 1.0) * gap) / n;
    let k = pw / (2.0 * x_max());
    let ph = 2.0 * y_max() * k;
    let line = size * 1.9;
    let title_size = size * 1.4;
    let top = margin + title_size + line * 0.6;
    let map_top = top + line;

    let mut body = String::new();
    text(
        &font,
        &mut body,
        title,
        margin,
        margin + title_size,
        title_size,
    );
    for (i, panel) in panels.iter().enumerate() {
        let f = Frame {
            x: margin + i as f64 * (pw + gap),
            y: map_top,
            k,
        };
        let name = match (panels.len(), i) {
            (1, _) => "map",
            (_, 0) => "before",
            _ => "after",
        };
        let _ = writeln!(body, "<g data-panel=\"{name}\">");
        text(&font, &mut body, &panel.label, f.x, top + size, size);
        body.push_str("<path fill=\"#eaf1f7\" stroke=\"#9fb3c8\" stroke-width=\"0.8\" d=\"");
        f.ring(&outline(), &mut body);
        body.push_str("\"/>\n");
        body.push_str(
            "<g stroke=\"#ffffff\" stroke-width=\"0.4\" stroke-linejoin=\"round\" fill-rule=\"evenodd\">\n",
        );
        for c in &world {
            let fill = panel.countries.get(&c.code).copied().unwrap_or(no_data);
            let paint = legend.get(fill).map(Entry::paint).unwrap_or_default();
            let mut d = String::new();
            for r in &c.rings {
                f.ring(r, &mut d);
            }
            if d.is_empty() {
                continue;
            }
            let _ = writeln!(
                body,
                "<path data-cc=\"{}{}\" fill=\"{paint}\" d=\"{d}\"/>",
                c.code[0] as char, c.code[1] as char
            );
        }
        body.push_str("</g>\n");
        if !panel.dots.is_empty() {
            let r_max = (CELL * k * std::f64::consts::PI / 180.0 * 0.55).max(1.5);
            body.push_str("<g stroke=\"#ffffff\" stroke-width=\"0.5\">\n");
            for d in &panel.dots {
                let (x, y) = f.at(project(d.lon, d.lat));
                let paint = legend.get(d.fill).map(Entry::paint).unwrap_or_default();
                body.push_str("<circle cx=\"");
                num(&mut body, x);
                body.push_str("\" cy=\"");
                num(&mut body, y);
                body.push_str("\" r=\"");
                num(&mut body, (r_max * d.size).max(0.8));
                let _ = writeln!(body, "\" fill=\"{paint}\"/>");
            }
            body.push_str("</g>\n");
        }
        body.push_str("</g>\n");
    }

    // The legend: a swatch and a name per entry, with its share per panel.
    let mut y = map_top + ph + line;
    text(
        &font,
        &mut body,
        if panels.len() > 1 {
            "Answering region: share of IPv4 addresses, before -> after"
        } else {
            "Answering region: share of IPv4 addresses"
        },
        margin,
        y,
        size,
    );
    y += line * 0.6;
    let labels: Vec<String> = legend
        .iter()
        .map(|e| {
            if e.shares.is_empty() {
                e.name.clone()
            } else {
                let s: Vec<String> = e.shares.iter().map(|&s| percent(s)).collect();
                format!("{}  {}", e.name, s.join(" -> "))
            }
        })
        .collect();
    let swatch = size * 1.3;
    let col = labels
        .iter()
        .map(|l| font.width(l, size))
        .fold(0.0, f64::max)
        + swatch
        + size * 3.0;
    let cols = (((w - 2.0 * margin) / col).floor() as usize).clamp(1, legend.len().max(1));
    for (i, (e, l)) in legend.iter().zip(&labels).enumerate() {
        let x = margin + (i % cols) as f64 * col;
        let ry = y + (i / cols) as f64 * line;
        body.push_str("<rect x=\"");
        num(&mut body, x);
        body.push_str("\" y=\"");
        num(&mut body, ry + (line - swatch) / 2.0);
        body.push_str("\" width=\"");
        num(&mut body, swatch);
        body.push_str("\" height=\"");
        num(&mut body, swatch);
        let share = e
            .shares
            .iter()
            .map(|&s| format!("{s:.4}"))
            .collect::<Vec<_>>();
        let _ = writeln!(
            body,
            "\" fill=\"{}\" stroke=\"#888888\" stroke-width=\"0.5\" data-legend=\"{}\" data-share=\"{}\"/>",
            e.paint(),
            attr(&e.name),
            share.join(" ")
        );
        text(
            &font,
            &mut body,
            l,
            x + swatch + size * 0.7,
            ry + (line + size) / 2.0,
            size,
        );
    }
    y += legend.len().div_ceil(cols) as f64 * line + line * 0.8;
    let note = format!(
        "Countries are filled with the region answering most of their addresses; where none answers {:.0}%, dots show the networks, one per {CELL:.0} degree cell, coloured by its majority and sized by its addresses. Country shapes: Natural Earth (public domain), Equal Earth projection.",
        SPLIT * 100.0
    );
    for l in font.wrap(&note, size * 0.85, w - 2.0 * margin) {
        y += line * 0.85;
        text(&font, &mut body, &l, margin, y, size * 0.85);
    }
    let height = (y + margin).ceil() as u32;

    let mut out = String::with_capacity(body.len() + 1024);
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\">"
    );
    out.push_str(concat!(
        "<defs>\n",
        "<pattern id=\"fail-open\" patternUnits=\"userSpaceOnUse\" width=\"6\" height=\"6\" patternTransform=\"rotate(45)\">",
        "<rect width=\"6\" height=\"6\" fill=\"#f7c5c5\"/><rect width=\"2.5\" height=\"6\" fill=\"#c0392b\"/></pattern>\n",
        "<pattern id=\"fallback\" patternUnits=\"userSpaceOnUse\" width=\"6\" height=\"6\" patternTransform=\"rotate(-45)\">",
        "<rect width=\"6\" height=\"6\" fill=\"#eeeeee\"/><rect width=\"2.5\" height=\"6\" fill=\"#555555\"/></pattern>\n",
        "</defs>\n",
    ));
    let _ = writeln!(
        out,
        "<rect width=\"{width}\" height=\"{height}\" fill=\"#ffffff\"/>"
    );
    out.push_str(&body);
    out.push_str("</svg>\n");
    Ok((out, width, height))
}

/// The SVG rendered to PNG at its own size.
pub fn png(svg: &str) -> Result<Vec<u8>, String> {
    use resvg::{tiny_skia, usvg};
    let tree = usvg::Tree::from_str(svg, &usvg::Options::default()).map_err(|e| e.to_string())?;
    let size = tree.size().to_int_size();
    let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height())
        .ok_or_else(|| format!("no {}x{} image", size.width(), size.height()))?;
    resvg::render(&tree, tiny_skia::Transform::default(), &mut pixmap.as_mut());
    pixmap.encode_png().map_err(|e| e.to_string())
}
