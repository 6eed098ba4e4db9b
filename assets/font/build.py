#!/usr/bin/env python3
"""Builds simplex.txt, the stroke font `geolb map` writes its legend with,
from the Hershey "Sans 1-stroke" (futural) glyphs of hersheytextjs's
hersheytext.json (https://github.com/techninja/hersheytextjs, JSON data in
the public domain).

    python3 assets/font/build.py hersheytext.json > assets/font/simplex.txt
"""
import json
import re
import sys

font = json.load(open(sys.argv[1]))["futural"]["chars"]
print("# Hershey Simplex (Sans 1-stroke) for `geolb map`'s legend.")
print("# The Hershey Fonts were originally created by Dr. A. V. Hershey while working")
print("# at the U. S. National Bureau of Standards. The format of the Font data in this")
print("# distribution was originally created by James Hurt, Cognition, Inc.")
print("# Glyph data via hersheytextjs (public domain); built by assets/font/build.py.")
print("# One glyph a line: character code, advance, then strokes separated by `;`,")
print("# each x,y points (y down, baseline at 0, cap height 21).")
print("32 16")
for i, g in enumerate(font):
    code = 33 + i
    if code > 126:
        break
    strokes = []
    for part in re.split(r"M", g["d"]):
        pts = re.findall(r"(-?\d+),(-?\d+)", part)
        if pts:
            strokes.append(" ".join(f"{x},{int(y) - 22}" for x, y in pts))
    print(f"{code} {2 * int(g['o'])} {';'.join(strokes)}")
