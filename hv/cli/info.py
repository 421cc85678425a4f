"""`hv info`: what this host can run."""


def add_parsers(sub):
    info = sub.add_parser("info", help="host capabilities: engines, ABI version")
    info.set_defaults(func=cmd_info)


def cmd_info(args):
    from hv.abi import lib
    from hv.partition import ENGINES, choose_engine, engine_status

    print(f"hv ABI version {lib.HV_ABI_VERSION_MAJOR}.{lib.HV_ABI_VERSION_MINOR}")
    for name in ENGINES:
        ok, why = engine_status(name)
        print(f"engine {name}: {'available' if ok else 'unavailable: ' + why}")
    name, why = choose_engine("auto")
    print(f"engine auto: picks {name} ({why})")
    return 0
