#!/usr/bin/env python3
"""The scoreboards of each SASS instruction, from `cuobjdump -sass` output (sm_70 and later).

    cuobjdump -sass file.cubin > file.sass
    scripts/sass_scoreboards.py file.sass [FIRST_ADDR LAST_ADDR]      (hex addresses, e.g. 0b70 3be0)

Prints one line per instruction: its address, the scoreboard it sets when its result (W) or its operands' reads (R)
complete, the scoreboards it waits for, its stall count, and the instruction. Variable-latency instructions (global
and shared loads, LDC, MUFU, ...) set a scoreboard; an instruction that uses their results waits for it, and a wait
covers everything on that scoreboard. The control bits sit in the top 23 bits of each instruction's second 64-bit
word: stall 41-44, yield 45, write scoreboard 46-48, read scoreboard 49-51 (7: none), wait mask 52-57, reuse 58-61.
Used to see which loads one wait covers (benchmarks/results/README.md, fourth and thirteenth sessions).
"""
import re
import sys


def main() -> int:
    if len(sys.argv) not in (2, 4):
        print(__doc__, file=sys.stderr)
        return 2
    first = int(sys.argv[2], 16) if len(sys.argv) == 4 else 0
    last = int(sys.argv[3], 16) if len(sys.argv) == 4 else 1 << 48
    lines = open(sys.argv[1]).read().split("\n")
    i = 0
    while i < len(lines) - 1:
        m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?);\s*/\* (0x[0-9a-f]+) \*/", lines[i])
        if not m:
            i += 1
            continue
        addr, text = int(m.group(1), 16), m.group(2).strip()
        hi = re.search(r"/\* (0x[0-9a-f]+) \*/", lines[i + 1])
        if hi and first <= addr <= last:
            h = int(hi.group(1), 16)
            stall, write, read, wait = (h >> 41) & 0xF, (h >> 46) & 7, (h >> 49) & 7, (h >> 52) & 0x3F
            sets = ("W%d" % write if write != 7 else "  ") + " " + ("R%d" % read if read != 7 else "  ")
            waits = "wait{" + ",".join(str(b) for b in range(6) if wait >> b & 1) + "}" if wait else ""
            print(f"{addr:05x} {sets} {waits:14s} s{stall:<2d} {text}")
        i += 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
