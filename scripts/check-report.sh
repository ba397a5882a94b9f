#!/usr/bin/env bash
# Renders a report page (a study's report.html) in headless Chromium to a PNG screenshot and
# fails if the screenshot is missing or nearly blank. A check for a person's machine: CI does
# not run it (it needs Chromium: `apt-get install chromium`).
#
#   scripts/check-report.sh REPORT.html [OUT.png] [WIDTHxHEIGHT]
#
# Defaults: OUT.png beside the report, a 1300x2400 window. Needs chromium and python3.
set -euo pipefail

if [[ $# -lt 1 || $# -gt 3 ]]; then
    echo "usage: $0 REPORT.html [OUT.png] [WIDTHxHEIGHT]" >&2
    exit 2
fi
report=$(realpath "$1")
png=${2:-${report%.html}.png}
size=${3:-1300x2400}
[[ -f $report ]] || { echo "error: no report at $report" >&2; exit 2; }
browser=$(command -v chromium || command -v chromium-browser || true)
[[ -n $browser ]] || { echo "error: chromium not found (apt-get install chromium)" >&2; exit 2; }

rm -f "$png"
# --no-sandbox: Chromium refuses to run as root with its sandbox. The page must not need the
# network: nothing outside the file is allowed to load.
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars \
    --window-size="${size/x/,}" --screenshot="$png" \
    --host-resolver-rules="MAP * ~NOTFOUND" "file://$report" >/dev/null 2>&1 || true
[[ -s $png ]] || { echo "error: chromium wrote no screenshot at $png" >&2; exit 1; }

# Decode the PNG with the standard library only and count the pixels that differ from the
# page's background (the most common colour).
python3 - "$png" <<'PY'
import struct, sys, zlib
from collections import Counter

path = sys.argv[1]
data = open(path, "rb").read()
if data[:8] != b"\x89PNG\r\n\x1a\n":
    sys.exit(f"error: {path} is not a PNG")
pos, idat = 8, []
while pos < len(data):
    length, kind = struct.unpack(">I4s", data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + length]
    if kind == b"IHDR":
        width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
    elif kind == b"IDAT":
        idat.append(body)
    pos += 12 + length
channels = {2: 3, 6: 4}.get(colour)
if depth != 8 or channels is None or interlace:
    sys.exit(f"error: unexpected PNG format (depth {depth}, colour type {colour})")
raw = zlib.decompress(b"".join(idat))
stride = width * channels
previous = bytearray(stride)
colours = Counter()
for y in range(height):
    start = y * (stride + 1)
    kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
    if kind == 1:
        for i in range(channels, stride):
            line[i] = (line[i] + line[i - channels]) & 255
    elif kind == 2:
        line = bytearray((a + b) & 255 for a, b in zip(line, previous))
    elif kind == 3:
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            line[i] = (line[i] + ((left + previous[i]) >> 1)) & 255
    elif kind == 4:
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b, c = previous[i], previous[i - channels] if i >= channels else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    previous = line
    colours.update(bytes(line[i:i + channels]) for i in range(0, stride, channels))
background, count = colours.most_common(1)[0]
drawn = 1 - count / (width * height)
print(f"{path}: {width}x{height}, {100 * drawn:.1f}% of the pixels drawn, {len(colours)} colours")
if drawn < 0.01 or len(colours) < 16:
    sys.exit("error: the screenshot is nearly blank")
PY
