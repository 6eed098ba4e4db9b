//! `geolb map`: the world coloured by the region that answers it — the
//! simulation's view (`Model::each_answer`: every listed input of the one
//! walk, its address space and what answers it per scenario) drawn on
//! Natural Earth's countries.
//!
//! A country is filled with the region that answers the majority of its
//! IPv4 addresses (IPv6 where it has none); where no region answers
//! [`SPLIT`] of them, its networks are drawn over it as dots, one per
//! [`CELL`]° cell (at the cell's address-weighted mean position), coloured
//! by the cell's majority and sized by its addresses. The legend gives each
//! region's share of all listed IPv4 space. Output is SVG, or PNG rendered
//! from that SVG by resvg; text is drawn as strokes of a built-in font, so
//! the same input gives the same bytes.

mod draw;
mod font;
mod world;

use rustc_hash::FxHashMap;

use super::{service_names, Answered, Model, ModelOf, QType, Scenario, SimError, Space};
use crate::policy::HealthView;
use crate::snapshot::Snapshot;

pub const MIN_WIDTH: u32 = 320;
pub const MAX_WIDTH: u32 = 4096;
/// Below this share for its majority region a country is drawn split.
pub const SPLIT: f64 = 0.9;
/// The side of a dot's cell, in degrees.
pub const CELL: f64 = 2.0;
/// At most this many dots per panel (the heaviest cells).
const MAX_DOTS: usize = 6000;

/// The output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Svg,
    Png,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s.to_ascii_lowercase().as_str() {
            "svg" => Some(Format::Svg),
            "png" => Some(Format::Png),
            _ => None,
        }
    }

    /// The format a file name's extension names.
    pub fn of_path(p: &std::path::Path) -> Option<Format> {
        Format::parse(p.extension()?.to_str()?)
    }
}

/// What to draw.
#[derive(Debug, Clone)]
pub struct MapOptions {
    /// The service (the first, by zone and name, when none).
    pub service: Option<String>,
    pub qtype: QType,
    pub scenario: Scenario,
    /// All up beside the scenario, with one legend.
    pub before_after: bool,
    /// In pixels.
    pub width: u32,
    pub format: Format,
}

/// A drawn map.
#[derive(Debug, Clone)]
pub struct Drawn {
    pub bytes: Vec<u8>,
    pub width: u32,
    pub height: u32,
    /// The service drawn.
    pub service: String,
    pub panels: Vec<PanelSummary>,
    /// Milliseconds: the walk and the decision keys; the scenarios decided
    /// and tallied; the SVG drawn; the PNG rendered (0 for SVG).
    pub timings_ms: [u64; 4],
}

/// What one panel shows.
#[derive(Debug, Clone)]
pub struct PanelSummary {
    /// The health scenario.
    pub label: String,
    /// Per bucket (legend order, non-zero only): its share of IPv4 space.
    pub shares: Vec<(String, f64)>,
    /// Countries drawn split, by code.
    pub split: Vec<String>,
}

/// What a legend entry stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fill {
    Region(usize),
    FailOpen,
    Fallback,
    Nodata,
    /// The database has no address of the country.
    NoData,
}

/// A country or cell's addresses per bucket (regions, then fail open,
/// fallback, NODATA), per panel.
#[derive(Clone)]
struct Tally {
    v4: Vec<f64>,
    v6: Vec<f64>,
}

impl Tally {
    fn new(n: usize) -> Tally {
        Tally {
            v4: vec![0.0; n],
            v6: vec![0.0; n],
        }
    }

    /// The bucket with the most addresses (IPv4, else IPv6; the first on a
    /// tie) and its share, of panel `p` with `b` buckets.
    fn majority(&self, p: usize, b: usize) -> Option<(usize, f64)> {
        let (v4, v6) = (&self.v4[p * b..(p + 1) * b], &self.v6[p * b..(p + 1) * b]);
        let of = |v: &[f64]| {
            let total: f64 = v.iter().sum();
            if total <= 0.0 {
                return None;
            }
            let mut best = 0;
            for (i, &x) in v.iter().enumerate() {
                if x > v[best] {
                    best = i;
                }
            }
            Some((best, v[best] / total))
        };
        of(v4).or_else(|| of(v6))
    }
}

/// A country and a cell (longitude and latitude over [`CELL`], rounded
/// down; `i32::MIN` twice for networks without coordinates).
type CellKey = ([u8; 2], i32, i32);

/// A cell of a country: its tally and its address-weighted position.
struct Cell {
    tally: Tally,
    lon_w: f64,
    lat_w: f64,
    w: f64,
}

/// A dot over a split country.
pub(crate) struct Dot {
    pub lon: f64,
    pub lat: f64,
    pub fill: usize,
    /// 0.3 to 1: the share of the largest radius.
    pub size: f64,
}

/// One panel, ready to draw.
pub(crate) struct Panel {
    pub label: String,
    /// Per country code: its fill (legend index).
    pub countries: FxHashMap<[u8; 2], usize>,
    pub dots: Vec<Dot>,
}

/// A legend entry: what it stands for and its share per panel.
pub(crate) struct Entry {
    fill: Fill,
    pub name: String,
    pub shares: Vec<f64>,
}

impl Entry {
    /// The SVG paint of this entry.
    pub fn paint(&self) -> String {
        match self.fill {
            Fill::Region(i) => PALETTE[i % PALETTE.len()].to_string(),
            Fill::FailOpen => "url(#fail-open)".to_string(),
            Fill::Fallback => "url(#fallback)".to_string(),
            Fill::Nodata => "#262626".to_string(),
            Fill::NoData => NO_DATA.to_string(),
        }
    }
}

/// Region colours, in config order (then again from the first).
pub const PALETTE: [&str; 12] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#17becf", "#bcbd22", "#8c564b",
];
/// Countries the database has no address of.
pub const NO_DATA: &str = "#d4d4d4";

/// Draws the map of `snap` under `opts`.
pub fn draw(snap: &Snapshot, opts: &MapOptions) -> Result<Drawn, SimError> {
    if !(MIN_WIDTH..=MAX_WIDTH).contains(&opts.width) {
        return Err(SimError::MapWidth {
            width: opts.width,
            min: MIN_WIDTH,
            max: MAX_WIDTH,
        });
    }
    let service = match &opts.service {
        Some(s) => s.clone(),
        None => service_names(snap)
            .into_iter()
            .next()
            .ok_or_else(|| SimError::UnknownService("(the config has no service)".into()))?,
    };
    let started = std::time::Instant::now();
    let model = Model::new(snap, std::slice::from_ref(&service), opts.qtype)?;
    let walked = std::time::Instant::now();
    let scenarios: Vec<Scenario> = if opts.before_after {
        vec![Scenario::default(), opts.scenario.clone()]
    } else {
        vec![opts.scenario.clone()]
    };
    let panels = scenarios
        .iter()
        .map(|s| Ok((s.label(), s.health(snap)?)))
        .collect::<Result<Vec<(String, HealthView)>, SimError>>()?;
    let mut drawn = draw_model(&model, &panels, opts.width, opts.format)?;
    drawn.timings_ms[0] = (walked - started).as_millis() as u64;
    Ok(drawn)
}

/// Draws the first service of `model` with one panel per `(label, health)`
/// — a scenario's view, or a running node's own: the walk is the model's,
/// done once, so a node redraws its map at each health change for the
/// cost of the decisions, the tally and the SVG (`timings_ms[0]` is 0).
pub fn draw_model<S: std::ops::Deref<Target = Snapshot>>(
    model: &ModelOf<S>,
    health: &[(String, HealthView)],
    width: u32,
    format: Format,
) -> Result<Drawn, SimError> {
    if !(MIN_WIDTH..=MAX_WIDTH).contains(&width) {
        return Err(SimError::MapWidth {
            width,
            min: MIN_WIDTH,
            max: MAX_WIDTH,
        });
    }
    let walked = std::time::Instant::now();
    let name = model
        .services()
        .first()
        .map(|s| s.to_string())
        .ok_or_else(|| SimError::UnknownService("(the config has no service)".into()))?;
    let views: Vec<&HealthView> = health.iter().map(|(_, h)| h).collect();
    let regions = model.regions();
    let buckets = regions.len() + 3;
    let bucket = |a: Answered| match a {
        Answered::Region(r) => r as usize,
        Answered::FailOpen => regions.len(),
        Answered::Fallback => regions.len() + 1,
        Answered::Nodata => regions.len() + 2,
    };
    let n = health.len() * buckets;
    let mut totals = vec![0.0; n];
    let mut cells: FxHashMap<CellKey, Cell> = FxHashMap::default();
    model.each_answer_under(0, &views, |input, space: Space, answered| {
        let add = |t: &mut Tally| {
            for (p, &a) in answered.iter().enumerate() {
                t.v4[p * buckets + bucket(a)] += space.v4;
                t.v6[p * buckets + bucket(a)] += space.v6;
            }
        };
        for (p, &a) in answered.iter().enumerate() {
            totals[p * buckets + bucket(a)] += space.v4;
        }
        let loc = &input.location;
        if !input.city || loc.country == [0, 0] {
            return;
        }
        let (key, pos) = match loc.coords {
            Some((lat, lon)) if lat.is_finite() && lon.is_finite() => {
                let cx = (lon / CELL).floor() as i32;
                let cy = (lat / CELL).floor() as i32;
                ((loc.country, cx, cy), Some((lon, lat)))
            }
            _ => ((loc.country, i32::MIN, i32::MIN), None),
        };
        let cell = cells.entry(key).or_insert_with(|| Cell {
            tally: Tally::new(n),
            lon_w: 0.0,
            lat_w: 0.0,
            w: 0.0,
        });
        add(&mut cell.tally);
        if let Some((lon, lat)) = pos {
            // Weighted by IPv4 addresses, with a little for every input so
            // IPv6-only cells have a position too.
            let w = space.v4 + 1.0;
            cell.lon_w += lon * w;
            cell.lat_w += lat * w;
            cell.w += w;
        }
    })?;
    let mut keys: Vec<CellKey> = cells.keys().copied().collect();
    keys.sort_unstable();
    let mut by_country: FxHashMap<[u8; 2], Tally> = FxHashMap::default();
    for k in &keys {
        let t = by_country.entry(k.0).or_insert_with(|| Tally::new(n));
        let c = &cells[k].tally;
        for (a, b) in t.v4.iter_mut().zip(&c.v4) {
            *a += b;
        }
        for (a, b) in t.v6.iter_mut().zip(&c.v6) {
            *a += b;
        }
    }

    let mut entries: Vec<Entry> = regions
        .iter()
        .enumerate()
        .map(|(i, r)| Entry {
            fill: Fill::Region(i),
            name: r.clone(),
            shares: Vec::new(),
        })
        .collect();
    entries.extend(
        [
            (Fill::FailOpen, "all down: fail open"),
            (Fill::Fallback, "all down: fallback"),
            (Fill::Nodata, "no answer (NODATA)"),
        ]
        .map(|(fill, name)| Entry {
            fill,
            name: name.to_string(),
            shares: Vec::new(),
        }),
    );
    for p in 0..health.len() {
        let all: f64 = totals[p * buckets..(p + 1) * buckets].iter().sum();
        for (b, e) in entries.iter_mut().enumerate() {
            let x = totals[p * buckets + b];
            e.shares.push(if all > 0.0 { x / all } else { 0.0 });
        }
    }

    let mut panels = Vec::new();
    let mut summaries = Vec::new();
    for (p, (label, _)) in health.iter().enumerate() {
        let mut countries = FxHashMap::default();
        let mut split = Vec::new();
        for (code, t) in &by_country {
            if let Some((b, share)) = t.majority(p, buckets) {
                countries.insert(*code, b);
                if share < SPLIT {
                    split.push(*code);
                }
            }
        }
        split.sort_unstable();
        let mut dots: Vec<(f64, CellKey, Dot)> = Vec::new();
        for k in keys.iter().filter(|k| k.1 != i32::MIN) {
            if split.binary_search(&k.0).is_err() {
                continue;
            }
            let c = &cells[k];
            let Some((b, _)) = c.tally.majority(p, buckets) else {
                continue;
            };
            let v4: f64 = c.tally.v4[p * buckets..(p + 1) * buckets].iter().sum();
            // A /24 is the smallest dot, a /8 the largest.
            let size = ((v4.max(1.0).log2() - 8.0) / 16.0).clamp(0.3, 1.0);
            dots.push((
                v4,
                *k,
                Dot {
                    lon: c.lon_w / c.w,
                    lat: c.lat_w / c.w,
                    fill: b,
                    size,
                },
            ));
        }
        if dots.len() > MAX_DOTS {
            dots.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            dots.truncate(MAX_DOTS);
            dots.sort_by_key(|a| a.1);
        }
        summaries.push(PanelSummary {
            label: label.clone(),
            shares: entries
                .iter()
                .filter(|e| e.shares[p] > 0.0)
                .map(|e| (e.name.clone(), e.shares[p]))
                .collect(),
            split: split
                .iter()
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect(),
        });
        panels.push(Panel {
            label: label.clone(),
            countries,
            dots: dots.into_iter().map(|d| d.2).collect(),
        });
    }
    // Regions always; the other answers only where some panel has them.
    let mut legend: Vec<Entry> = entries
        .into_iter()
        .filter(|e| matches!(e.fill, Fill::Region(_)) || e.shares.iter().any(|&s| s > 0.0))
        .collect();
    // Panels refer to buckets; the legend keeps its own order.
    let index: Vec<Option<usize>> = (0..buckets)
        .map(|b| {
            legend.iter().position(|e| match e.fill {
                Fill::Region(i) => i == b,
                Fill::FailOpen => b == regions.len(),
                Fill::Fallback => b == regions.len() + 1,
                Fill::Nodata => b == regions.len() + 2,
                Fill::NoData => false,
            })
        })
        .collect();
    legend.push(Entry {
        fill: Fill::NoData,
        name: "no data in the database".to_string(),
        shares: Vec::new(),
    });
    let no_data = legend.len() - 1;
    let at = |b: usize| index.get(b).copied().flatten().unwrap_or(no_data);
    for panel in &mut panels {
        for v in panel.countries.values_mut() {
            *v = at(*v);
        }
        for d in &mut panel.dots {
            d.fill = at(d.fill);
        }
    }
    let tallied = std::time::Instant::now();
    let title = format!("{} {}", name.trim_end_matches('.'), model.qtype().name());
    let (svg, width, height) =
        draw::svg(&title, &panels, &legend, no_data, width).map_err(SimError::Draw)?;
    let drawn = std::time::Instant::now();
    let bytes = match format {
        Format::Svg => svg.into_bytes(),
        Format::Png => draw::png(&svg).map_err(SimError::Draw)?,
    };
    let ms = |a: std::time::Instant, b: std::time::Instant| (b - a).as_millis() as u64;
    let timings_ms = [
        0,
        ms(walked, tallied),
        ms(tallied, drawn),
        ms(drawn, std::time::Instant::now()),
    ];
    Ok(Drawn {
        bytes,
        width,
        height,
        service: name,
        panels: summaries,
        timings_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_by_ipv4_then_ipv6_first_on_a_tie() {
        // Two panels of three buckets.
        let mut t = Tally::new(6);
        t.v4[..3].copy_from_slice(&[1.0, 3.0, 0.0]);
        t.v6[..3].copy_from_slice(&[0.0, 0.0, 9.0]);
        assert_eq!(t.majority(0, 3), Some((1, 0.75)));
        // No IPv4 in the second panel: IPv6 decides; a tie goes to the first.
        t.v6[3..].copy_from_slice(&[2.0, 2.0, 0.0]);
        assert_eq!(t.majority(1, 3), Some((0, 0.5)));
        assert_eq!(Tally::new(3).majority(0, 3), None);
    }

    #[test]
    fn format_from_name_or_extension() {
        assert_eq!(Format::parse("PNG"), Some(Format::Png));
        assert_eq!(
            Format::of_path(std::path::Path::new("a/m.svg")),
            Some(Format::Svg)
        );
        assert_eq!(Format::of_path(std::path::Path::new("m")), None);
        assert_eq!(Format::parse("gif"), None);
    }
}
