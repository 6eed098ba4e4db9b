//! The country shapes a map draws (Natural Earth's Admin 0 countries at
//! 1:50m, public domain, simplified by `assets/world/build.py` and built
//! into the binary) and the Equal Earth projection.

/// `assets/world/countries.txt`: a line `CC Name` starts a country, each
/// following line is one ring of `lon,lat` pairs in 1/100 degree.
const COUNTRIES: &str = include_str!("../../../assets/world/countries.txt");

/// A country, projected: its ISO 3166-1 alpha-2 code and its rings (filled
/// even-odd) in projection units.
pub struct Country {
    pub code: [u8; 2],
    pub rings: Vec<Vec<(f64, f64)>>,
}

/// The built-in countries, in code order, projected.
pub fn countries() -> Result<Vec<Country>, String> {
    let mut out: Vec<Country> = Vec::new();
    for (n, line) in COUNTRIES.lines().enumerate() {
        let bad = || format!("built-in country shapes, line {}: {line:.40}", n + 1);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let b = line.as_bytes();
        if b.len() >= 3 && b[0].is_ascii_uppercase() && b[1].is_ascii_uppercase() && b[2] == b' ' {
            out.push(Country {
                code: [b[0], b[1]],
                rings: Vec::new(),
            });
            continue;
        }
        let country = out.last_mut().ok_or_else(bad)?;
        let mut ring = Vec::new();
        for pair in line.split(' ') {
            let (lon, lat) = pair.split_once(',').ok_or_else(bad)?;
            let lon: i32 = lon.parse().map_err(|_| bad())?;
            let lat: i32 = lat.parse().map_err(|_| bad())?;
            ring.push(project(f64::from(lon) / 100.0, f64::from(lat) / 100.0));
        }
        country.rings.push(ring);
    }
    Ok(out)
}

const A1: f64 = 1.340264;
const A2: f64 = -0.081106;
const A3: f64 = 0.000893;
const A4: f64 = 0.003796;

/// The Equal Earth projection (Šavrič, Patterson, Jenny 2018) of a point
/// in degrees, in units where the equator spans ±[`X_MAX`].
pub fn project(lon: f64, lat: f64) -> (f64, f64) {
    let m = 3f64.sqrt() / 2.0;
    let lam = lon.clamp(-180.0, 180.0).to_radians();
    let phi = lat.clamp(-90.0, 90.0).to_radians();
    let t = (m * phi.sin()).asin();
    let (t2, t6) = (t * t, t.powi(6));
    let x = 2.0 * 3f64.sqrt() * lam * t.cos()
        / (3.0 * (9.0 * A4 * t6 * t2 + 7.0 * A3 * t6 + 3.0 * A2 * t2 + A1));
    let y = t * (A1 + A2 * t2 + t6 * (A3 + A4 * t2));
    (x, y)
}

/// Half the projected width (the equator from 0 to 180°).
pub fn x_max() -> f64 {
    project(180.0, 0.0).0
}

/// Half the projected height (the pole).
pub fn y_max() -> f64 {
    project(0.0, 90.0).1
}

/// The outline of the world: the ±180° meridians, one degree a point.
pub fn outline() -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = (-90..=90).map(|lat| project(-180.0, lat.into())).collect();
    out.extend((-90..=90).rev().map(|lat| project(180.0, lat.into())));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_earth_extent() {
        // The published extent: ±2.7066 wide, ±1.3173 high.
        assert!((x_max() - 2.7066).abs() < 1e-3, "{}", x_max());
        assert!((y_max() - 1.3173).abs() < 1e-3, "{}", y_max());
        assert_eq!(project(0.0, 0.0), (0.0, 0.0));
    }

    #[test]
    fn built_in_countries_parse() {
        let c = countries().expect("built-in shapes parse");
        assert!(c.len() > 200, "{}", c.len());
        for code in [*b"FR", *b"NO", *b"US", *b"JP", *b"BR", *b"XK"] {
            let found = c.iter().find(|x| x.code == code);
            assert!(found.is_some_and(|x| !x.rings.is_empty()), "{code:?}");
        }
        // In code order, each once.
        assert!(c.windows(2).all(|w| w[0].code < w[1].code));
    }
}
