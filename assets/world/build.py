#!/usr/bin/env python3
"""Builds countries.txt, the country shapes `geolb map` draws, from Natural
Earth's Admin 0 countries at 1:50m as the world-atlas npm package ships them
(TopoJSON, Natural Earth 4.1.0; the package is ISC-licensed, Natural Earth's
data public domain), and the ISO 3166-1 table of Debian's
iso-codes package (numeric code -> alpha-2).

    npm pack world-atlas@2.0.2 && tar xzf world-atlas-2.0.2.tgz
    python3 assets/world/build.py package/countries-50m.json \
        /usr/share/iso-codes/json/iso_3166-1.json > assets/world/countries.txt

Each shared border (TopoJSON arc) is simplified once (Douglas-Peucker,
TOLERANCE degrees), so neighbours keep meeting exactly; coordinates are
rounded to 1/100 degree; segments longer than STEP degrees are split so
that the projection can bend them (meridians at +-180, the polar edge).
Rings that cross the antimeridian are cut there; Antarctica's, which goes
around the pole, is closed along it.
"""
import json
import math
import sys

TOLERANCE = 0.06
STEP = 2.0

# Natural Earth features without an ISO 3166-1 numeric code, by the code
# MaxMind's GeoIP databases give their addresses.
UNCODED = {
    "Somaliland": "SO",
    "Kosovo": "XK",
    "N. Cyprus": "CY",
    "Siachen Glacier": "IN",
    "Indian Ocean Ter.": "AU",
}


def simplify(pts, tol):
    """Douglas-Peucker keeping both ends."""
    if len(pts) < 3:
        return pts
    keep = [False] * len(pts)
    keep[0] = keep[-1] = True
    stack = [(0, len(pts) - 1)]
    while stack:
        a, b = stack.pop()
        (ax, ay), (bx, by) = pts[a], pts[b]
        dx, dy = bx - ax, by - ay
        norm = math.hypot(dx, dy)
        best, at = -1.0, -1
        for i in range(a + 1, b):
            px, py = pts[i]
            if norm == 0:
                d = math.hypot(px - ax, py - ay)
            else:
                d = abs(dy * (px - ax) - dx * (py - ay)) / norm
            if d > best:
                best, at = d, i
        if at >= 0 and best > tol:
            keep[at] = True
            stack.append((a, at))
            stack.append((at, b))
    return [p for p, k in zip(pts, keep) if k]


def simplify_arc(pts, tol):
    if len(pts) > 3 and pts[0] == pts[-1]:
        # A closed arc: cut at its farthest point so that both halves keep
        # a shape.
        far = max(range(len(pts)), key=lambda i: math.hypot(pts[i][0] - pts[0][0], pts[i][1] - pts[0][1]))
        return simplify(pts[: far + 1], tol)[:-1] + simplify(pts[far:], tol)
    return simplify(pts, tol)


def clip(ring, lo, hi):
    """Sutherland-Hodgman: the part of a closed ring with lo <= lon <= hi."""
    for edge, inside in ((lo, lambda x: x >= lo), (hi, lambda x: x <= hi)):
        out = []
        for i, cur in enumerate(ring):
            prev = ring[i - 1]
            if inside(cur[0]):
                if not inside(prev[0]):
                    out.append(cross(prev, cur, edge))
                out.append(cur)
            elif inside(prev[0]):
                out.append(cross(prev, cur, edge))
        ring = out
        if not ring:
            break
    return ring


def cross(a, b, x):
    t = (x - a[0]) / (b[0] - a[0])
    return (x, a[1] + (b[1] - a[1]) * t)


def antimeridian(ring):
    """Rings in spherical coordinates, as planar rings within +-180: a ring
    that crosses the antimeridian is cut there, one around a pole gets the
    pole's edge."""
    if ring[0] == ring[-1]:
        ring = ring[:-1]
    out = [ring[0]]
    for lon, lat in ring[1:]:
        prev = out[-1][0]
        while lon - prev > 180:
            lon -= 360
        while lon - prev < -180:
            lon += 360
        out.append((lon, lat))
    first, last = out[0], out[-1]
    closing = first[0] - last[0]
    if abs(closing) > 180:
        # Around a pole: go along it back to where the ring started.
        pole = -90.0 if sum(p[1] for p in out) < 0 else 90.0
        out += [(last[0], pole), (first[0], pole)]
    lons = [p[0] for p in out]
    if min(lons) >= -180 and max(lons) <= 180:
        return [out]
    parts = []
    j = math.floor((min(lons) + 180) / 360)
    while -180 + 360 * j < max(lons):
        part = clip(out, -180 + 360 * j, 180 + 360 * j)
        if len(part) >= 3:
            parts.append([(x - 360 * j, y) for x, y in part])
        j += 1
    return parts


def main():
    topo = json.load(open(sys.argv[1]))
    iso = {c["numeric"]: c["alpha_2"] for c in json.load(open(sys.argv[2]))["3166-1"]}
    sx, sy = topo["transform"]["scale"]
    tx, ty = topo["transform"]["translate"]
    arcs = []
    for arc in topo["arcs"]:
        x = y = 0
        pts = []
        for dx, dy in arc:
            x += dx
            y += dy
            pts.append((x * sx + tx, y * sy + ty))
        arcs.append(simplify_arc(pts, TOLERANCE))

    def ring(indices):
        out = []
        for i in indices:
            pts = arcs[i] if i >= 0 else arcs[~i][::-1]
            out.extend(pts if not out else pts[1:])
        return out

    def quantize(out):
        q = []
        # Back to the start, so that the closing segment is split too.
        for lon, lat in out + out[:1]:
            p = (round(lon * 100), round(lat * 100))
            if q:
                # Split long segments.
                (plon, plat) = q[-1]
                n = int(max(abs(p[0] - plon), abs(p[1] - plat)) / (STEP * 100))
                for k in range(1, n + 1):
                    q.append((round(plon + (p[0] - plon) * k / (n + 1)), round(plat + (p[1] - plat) * k / (n + 1))))
            if not q or q[-1] != p:
                q.append(p)
        if len(q) > 1 and q[0] == q[-1]:
            q.pop()
        return q if len(q) >= 3 else None

    countries = {}
    for g in topo["objects"]["countries"]["geometries"]:
        name = g["properties"]["name"]
        code = iso.get(g.get("id")) or UNCODED.get(name)
        if code is None:
            print(f"no code for {name!r}", file=sys.stderr)
            continue
        polys = g["arcs"] if g["type"] == "MultiPolygon" else [g["arcs"]] if g["type"] == "Polygon" else []
        rings = [q for poly in polys for r in poly for part in antimeridian(ring(r)) for q in [quantize(part)] if q]
        if rings:
            entry = countries.setdefault(code, (name, []))
            entry[1].extend(rings)

    print("# Country shapes for `geolb map`: Natural Earth Admin 0 countries, 1:50m,")
    print("# version 4.1.0 (public domain, https://www.naturalearthdata.com/), from the")
    print("# world-atlas 2.0.2 TopoJSON (Michael Bostock, ISC licence); simplified and")
    print("# cut at the antimeridian by assets/world/build.py.")
    print("# A line `CC Name` starts a country (ISO 3166-1 alpha-2); each following line")
    print("# is one ring: lon,lat pairs in 1/100 degree. Fill even-odd.")
    for code in sorted(countries):
        name, rings = countries[code]
        print(f"{code} {name}")
        for r in rings:
            print(" ".join(f"{lon},{lat}" for lon, lat in r))


main()
