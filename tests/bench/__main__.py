"""`./build.sh bench`: runs every tests/bench/bench_*.py module's `main()`, each printing its figures
as ratios against an anchor measured in the same run."""
import importlib
import pkgutil
import sys

import tests.bench as package


def main() -> int:
    modules = sorted(m.name for m in pkgutil.iter_modules(package.__path__) if m.name.startswith("bench_"))
    if not modules:
        print("no benchmarks yet: the TURN (issue 3) and SFU (issue 4) benchmarks add themselves here")
        return 0
    wanted = set(sys.argv[1:])
    for name in modules:
        if wanted and name.removeprefix("bench_") not in wanted:
            continue
        print(f"== {name.removeprefix('bench_')}")
        importlib.import_module(f"tests.bench.{name}").main()
    return 0


sys.exit(main())
