"""Start-up time of the light commands, which must not import torch (tests/test_cli.py checks the imports).

    python bench/startup.py [--repeat 5]

Prints a Markdown table: the median wall time of each command as a fresh process, and for scale the time
to import torch and transformers, which the heavy commands (predict, serve, train) pay.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = {
    "extortion-guard --help": (["--help"], None),
    "extortion-guard hash-password --stdin": (["hash-password", "--stdin"], "a long enough password\n"),
    "extortion-guard data validate (one line)": (["data", "validate", "{data}"], None),
}


def wall_seconds(argv: list[str], stdin: str | None, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(argv, input=stdin, capture_output=True, text=True, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp()) / "one.jsonl"
    data.write_text('{"id": "a-1", "text": "在吗", "context": [], "label": "normal"}\n', encoding="utf-8")
    cli = [sys.executable, "-c", "import sys; from serve.cli import main; sys.exit(main())"]
    rows = [(name, wall_seconds(cli + [a.format(data=data) for a in argv], stdin, args.repeat)) for name, (argv, stdin) in COMMANDS.items()]
    rows.append(
        (
            "for scale: python -c 'import torch, transformers'",
            wall_seconds([sys.executable, "-c", "import torch, transformers"], None, args.repeat),
        )
    )
    print(f"| command (fresh process, median of {args.repeat}) | seconds |\n|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
