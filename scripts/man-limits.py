#!/usr/bin/python3
"""Regenerates the LIMITS section of man/estafeta.conf.5 and the limits table
of doc/config.md from src/lib/limits.c, the one table of limits, so the
manual cannot drift from the code.

    scripts/man-limits.py          rewrite both
    scripts/man-limits.py --check  exit 1 if either is out of date, or if a
                                   directive of src/conf/config.c is not
                                   described in both
"""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KIB = 1024
UNITS = {"LIMIT_COUNT": "count", "LIMIT_SIZE": "size", "LIMIT_TIME": "time"}


def value(expr):
    expr = expr.replace("KiB", "1024").replace("MiB", "1048576")
    expr = re.sub(r"\(\s*size_t\s*\)", "", expr)
    if not re.fullmatch(r"[0-9 *()]+", expr):
        raise ValueError(f"limits.c: cannot read {expr!r}")
    return int(eval(expr, {"__builtins__": {}}))


def human(v, unit):
    if unit == "size":
        for suffix, m in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
            if v >= m and v % m == 0:
                return f"{v // m}{suffix}"
    if unit == "time":
        if v == 0:
            return "0s"
        for suffix, m in (("d", 86400), ("h", 3600), ("m", 60)):
            if v >= m and v % m == 0:
                return f"{v // m}{suffix}"
        return f"{v}s"
    return str(v)


def entries():
    src = (ROOT / "src/lib/limits.c").read_text()
    out = []
    for m in re.finditer(r'\[LIM_\w+\] = \{\s*"([a-z0-9-]+)",\s*(LIMIT_\w+),\s*'
                         r'([^,]+),\s*([^,]+),\s*([^,]+),\s*((?:"(?:[^"\\]|\\.)*"\s*)+)\}',
                         src):
        name, unit, d, lo, hi, reason = m.groups()
        unit = UNITS[unit]
        reason = "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', reason)).replace('\\"', '"')
        out.append((name, unit, value(d), value(lo), value(hi), reason))
    return out


def section():
    lines = [".SH LIMITS"]
    for name, unit, d, lo, hi, reason in entries():
        esc = lambda s: s.replace("\\", "\\\\").replace("-", "\\-")
        lines.append(".TP")
        lines.append(f".B {esc(name)}")
        lines.append(f"{unit}, default {human(d, unit)} "
                     f"({human(lo, unit)}\\(en{human(hi, unit)}). {esc(reason)}")
    return "\n".join(lines) + "\n"


def md_table():
    lines = ["| name | kind | default | range | why |", "|---|---|---|---|---|"]
    for name, unit, d, lo, hi, reason in entries():
        lines.append(f"| `{name}` | {unit} | {human(d, unit)} | "
                     f"{human(lo, unit)} \u2013 {human(hi, unit)} | {reason} |")
    return "\n".join(lines) + "\n"


def directive_gaps():
    """Directives the parser knows (src/conf/config.c's table) that the
    man page's DIRECTIVES section or doc/config.md does not describe."""
    code = (ROOT / "src/conf/config.c").read_text()
    names = re.findall(r'\[D_\w+\] = \{"([a-z0-9-]+)"', code)
    if not names:
        raise ValueError("config.c: no directive table found")
    man = (ROOT / "man/estafeta.conf.5").read_text()
    sect = man[man.index(".SH DIRECTIVES\n"):man.index(".SH LIMITS\n")]
    # The name that opens each entry's tag line (".TP" then ".B name
    # args"), or each of two (".BR vrfy " on|off" ", " expn ..."); the
    # name that opens each "### name args" heading, or each of two
    # ("### vrfy on|off, expn on|off"). Never an argument's words.
    tags = re.findall(r"^\.TP\n(.*)$", sect, re.M)
    in_man = {n.replace("\\-", "-") for t in tags
              for n in re.findall(r'(?:^\.B[IR]? |", " )([a-z0-9\\-]+)', t)}
    md = (ROOT / "doc/config.md").read_text()
    in_md = {n for h in re.findall(r"^### (.*)$", md, re.M)
             for n in re.findall(r"(?:^|, )([a-z0-9-]+)", h)}
    return ([("man/estafeta.conf.5", n) for n in names if n not in in_man] +
            [("doc/config.md", n) for n in names if n not in in_md])


def main():
    man = ROOT / "man/estafeta.conf.5"
    text = man.read_text()
    start = text.index(".SH LIMITS\n")
    end = text.index("\n.SH ", start + 1) + 1
    new = text[:start] + section() + text[end:]
    md = ROOT / "doc/config.md"
    mtext = md.read_text()
    mstart = mtext.index("| name | kind | default | range | why |")
    mend = mtext.index("\n\n", mstart) + 1
    mnew = mtext[:mstart] + md_table() + mtext[mend:]
    if "--check" in sys.argv:
        bad = [str(p.relative_to(ROOT)) for p, a, b in ((man, text, new), (md, mtext, mnew))
               if a != b]
        if bad:
            print("%s: the limits are out of date; run scripts/man-limits.py" % ", ".join(bad))
        gaps = directive_gaps()
        for where, name in gaps:
            print("%s: directive '%s' is not described" % (where, name))
        return 1 if bad or gaps else 0
    man.write_text(new)
    md.write_text(mnew)
    return 0


if __name__ == "__main__":
    sys.exit(main())
