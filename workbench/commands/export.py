"""``coe-workbench export``: write a CoE (the offline demo, or another bundle) as a bundle folder."""
from __future__ import annotations

NAME = "export"
ORDER = 92
HELP = "export the offline demo CoE (or re-export a bundle) as a portable bundle folder"
DESCRIPTION = """\
Write a CoE as a bundle folder that `coe-workbench serve-api FOLDER` and CoE.load(FOLDER) read: a
versioned manifest (coe.json: the embedding model with its pooling settings and fingerprint, the
expert specs, the pool budgets), the router (router.npz, no pickle) and the category-to-expert map
(mapping.json). Loading validates every part and names what is wrong.

By default the offline demo CoE is exported (built on first use; --tiny for the tiny experts).
--from re-exports an existing bundle, e.g. with --copy-experts, which copies every expert's
checkpoint and adapter into the folder so it can be moved to another machine.

--ray-config FILE also writes a Ray Serve config (YAML) for the bundle: `serve run FILE` on one
machine, `serve deploy FILE` to a cluster, or its applications in a KubeRay RayService's
serveConfigV2 (see the README). --replicas / --experts-per-replica set its expert replicas.

example:
  coe-workbench export my-coe
  coe-workbench export my-coe --tiny --ray-config my-coe-serve.yaml --replicas 2
  coe-workbench export my-coe --tiny
  coe-workbench export portable-coe --from my-coe --copy-experts
"""

from workbench.commands.serve import add_demo_arguments, apply_demo_kind


def register(parser) -> None:
    parser.add_argument("folder", metavar="FOLDER", help="the bundle folder to write")
    parser.add_argument("--from", dest="source", metavar="BUNDLE", default=None,
                        help="re-export this bundle folder instead of the demo")
    parser.add_argument("--copy-experts", action="store_true",
                        help="copy the experts' checkpoints and adapters into the bundle")
    parser.add_argument("--ray-config", metavar="FILE", default=None,
                        help="also write a Ray Serve config (serve run / serve deploy YAML) for it")
    parser.add_argument("--replicas", type=int, default=1, metavar="N",
                        help="with --ray-config: expert replicas (default 1)")
    parser.add_argument("--experts-per-replica", type=int, default=None, metavar="K",
                        help="with --ray-config: experts loaded at once per replica (default: all)")
    parser.add_argument("--quiet", action="store_true", help="no progress output while building")
    add_demo_arguments(parser)


def run(args) -> int:
    import time

    from workbench.serve.bundle import read_manifest, save_coe

    t0 = time.perf_counter()
    if args.source:
        from workbench.serve.bundle import load_coe

        coe = load_coe(args.source)
    else:
        from workbench.demo import build_demo_bundle

        apply_demo_kind(args)
        coe = build_demo_bundle(progress=not args.quiet).coe
    try:
        folder = save_coe(coe, args.folder, copy_experts=args.copy_experts)
    finally:
        coe.pool.close()
    manifest = read_manifest(folder)
    experts = ", ".join(e["name"] for e in manifest["experts"])
    print(f"exported the CoE to {folder} in {time.perf_counter() - t0:.1f} s: "
          f"{len(manifest['experts'])} experts ({experts}), "
          f"{len(manifest['router'].get('categories', []))} categories")
    print(f"serve it with: coe-workbench serve-api {folder}")
    if getattr(args, "ray_config", None):
        from workbench.serve.ray_backend import write_ray_config

        path = write_ray_config(folder, args.ray_config, replicas=args.replicas,
                                experts_per_replica=args.experts_per_replica)
        print(f"wrote the Ray Serve config {path}: serve run {path} (or serve deploy {path})")
    return 0
