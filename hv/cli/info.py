"""`hv info`: what this host can run (text, or one JSON object with --json)."""
import json

import hv


def add_parsers(sub):
    info = sub.add_parser("info", help="host capabilities: engines, ABI version")
    info.add_argument("--json", action="store_true", help="one JSON object on stdout")
    info.set_defaults(func=cmd_info)


def host_info():
    """{"version", "abi", "engines": {name: {"available", "reason"}}, "auto": {...}}."""
    from hv.abi import lib
    from hv.partition import ENGINES, choose_engine, engine_status

    engines = {}
    for name in ENGINES:
        ok, why = engine_status(name)
        engines[name] = {"available": ok, "reason": why}
    auto, why = choose_engine("auto")
    return {"version": hv.__version__,
            "abi": f"{lib.HV_ABI_VERSION_MAJOR}.{lib.HV_ABI_VERSION_MINOR}",
            "engines": engines,
            "auto": {"engine": auto, "reason": why}}


def cmd_info(args):
    facts = host_info()
    if args.json:
        print(json.dumps(facts))
        return 0
    print(f"hv {facts['version']}, ABI version {facts['abi']}")
    for name, e in facts["engines"].items():
        print(f"engine {name}: {'available' if e['available'] else 'unavailable: ' + e['reason']}")
    print(f"engine auto: picks {facts['auto']['engine']} ({facts['auto']['reason']})")
    return 0
