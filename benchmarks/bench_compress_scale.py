"""``compress`` at photo scale: proxy search and full-size confirmation against today's full-size search.

Three parts, in one run:

* **photos**: real photographs of 12 megapixels or more, each compressed to ``--target`` over ``--formats``
  by (a) ``compress`` as it is now (proxy search, full-size confirmation), (b) the same code searching at
  full size (``proxy_min_pixels=None``: the bytes reference), and (c) the code of ``--baseline-ref`` (today's
  landed search; exported with ``git archive``) for time and memory. Each run is a fresh process (peak RSS
  is its own ``VmHWM``). Reported: wall time divided by the time of one full-size encode in each
  searched format (measured in another fresh process, same thread settings), peak RSS, every written file
  re-scored at full size from disk with a fresh evaluator, and bytes against the full-size search.
* **proxies**: at each photo's full-size answer in each format, the score and bytes a proxy predicts against
  the full-size truth: the tile mosaic the search uses (16 tiles of 256), a larger one (36 tiles), a 4x
  downscale; on Kodak (768x512, too small for the production proxy) 8 tiles of 128 and a 2x downscale.
* **kodak**: the 24 Kodak images, now and ``--baseline-ref``: probes per image and seconds per image.

The photographs are not in the repository: they come from Debian's ``lomiri-wallpapers-16.04`` and ``-20.04`` packages
(photographs by Lukas Baubkus, Clements Engelhardt, Bolly; camera-native sizes, see RESULTS.md), fetched with
``apt-get download`` into ``--cache`` (default ``~/.cache/optimizer-bench``) when missing, and said so.

Usage: ``python benchmarks/bench_compress_scale.py [--photos kleiber,seeding,dragonfly] [--target
ssimulacra2:80] [--formats avif,webp,jpeg] [--baseline-ref main] [--parts photos,proxies,kodak]``.
Prints a markdown section for ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("OPTIMIZER_DATASETS", REPO.parent / "shared" / "datasets"))

#: name -> (Debian package, file inside it)
PHOTOS: dict[str, tuple[str, str]] = {
    "kleiber": ("lomiri-wallpapers-20.04", "usr/share/backgrounds/Kleiber_by_Lukas_Baubkus.jpg"),
    "seeding": ("lomiri-wallpapers-16.04", "usr/share/backgrounds/seeding_by_Clements_Engelhardt.jpg"),
    "dragonfly": ("lomiri-wallpapers-16.04", "usr/share/backgrounds/Dragonfly_by_Bolly.jpg"),
}
#: Settings of the reference encode per format (one full-size encode each: the time compress is divided by).
REFERENCE_SETTINGS: dict[str, dict[str, Any]] = {
    "avif": {"quality": 70},
    "webp": {"quality": 85},
    "jpeg": {"quality": 85},
    "jxl": {"distance": 1.5},
}


# --------------------------------------------------------------------------------------------------
# Photographs, fetched from Debian when missing


def photo_paths(names: list[str], cache: Path) -> list[Path]:
    out = []
    for name in names:
        package, inner = PHOTOS[name]
        target = cache / "photos" / Path(inner).name
        if not target.is_file():
            print(f"fetching {package} with apt-get download (for {target.name}) into {cache}", file=sys.stderr)
            debs = cache / "debs"
            debs.mkdir(parents=True, exist_ok=True)
            if not list(debs.glob(f"{package}_*.deb")):
                subprocess.run(["apt-get", "download", package], cwd=debs, check=True)
            deb = next(debs.glob(f"{package}_*.deb"))
            extracted = cache / "extracted" / package
            extracted.mkdir(parents=True, exist_ok=True)
            subprocess.run(["dpkg-deb", "-x", str(deb), str(extracted)], check=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes((extracted / inner).read_bytes())
        out.append(target)
    return out


# --------------------------------------------------------------------------------------------------
# Child processes: each measured run alone in a fresh interpreter

_CHILD = r"""
import json, sys, time
spec = json.loads(sys.stdin.read())
import torch
torch.set_num_threads(spec["threads"])
started = time.perf_counter()
if spec["kind"] == "encode":
    from optimizer.codecs import get_codec
    from optimizer.imageio import load_image
    image = load_image(spec["path"])
    out = {}
    for name, params in spec["settings"].items():
        codec = get_codec(name)
        t = time.perf_counter()
        data = codec.encode(image, params)
        out[name] = {"seconds": time.perf_counter() - t, "bytes": len(data)}
    result = {"encodes": out}
else:
    from optimizer.tuning.adaptive import compress
    report = compress(spec["paths"], target=spec["target"], formats=spec["formats"], out_dir=spec["out_dir"],
                      **spec["options"])
    result = {"report": report.to_dict()}
result["seconds"] = time.perf_counter() - started
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent across exec
with open("/proc/self/status") as status:
    hwm = next(line for line in status if line.startswith("VmHWM:"))
result["maxrss"] = int(hwm.split()[1]) * 1024
print(json.dumps(result))
"""


def child(spec: dict[str, Any], code: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(code)}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        env=env,
        cwd=code,  # "-c" puts the working folder first on sys.path: it must hold the code measured
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"child failed ({done.returncode}): {done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def export_ref(ref: str, into: Path) -> Path:
    """The code of ``ref`` (``git archive``), for the baseline runs."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", ref, "optimizer"], cwd=REPO, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


# --------------------------------------------------------------------------------------------------
# Parts


def rescore(evaluator: Any, source: Path, written: Path, target: Any) -> tuple[float, bool]:
    from optimizer.imageio import load_image

    value = target.value_of(evaluator.evaluate(load_image(source), load_image(written)))
    return value, target.is_met(value)


def photos_part(args: argparse.Namespace, paths: list[Path], baseline: Path | None, scratch: Path) -> dict[str, Any]:
    from optimizer.evaluator import Evaluator
    from optimizer.tuning.target import Target

    target = Target.parse(args.target)
    fresh = Evaluator(metrics=[target.metric]).load()
    rows = []
    for path in paths:
        print(f"photo {path.name}", file=sys.stderr, flush=True)
        settings = {f: REFERENCE_SETTINGS[f] for f in args.formats}
        encode = child({"kind": "encode", "path": str(path), "settings": settings, "threads": args.threads}, REPO)
        print(f"  one encode per format: {encode['encodes']}", file=sys.stderr, flush=True)
        runs: dict[str, dict[str, Any]] = {}
        plans: list[tuple[str, Path, dict[str, Any]]] = [("proxy", REPO, {})]
        if not args.quick:
            plans.append(("full-size search", REPO, {"proxy_min_pixels": None}))
        if baseline is not None:
            plans.append(("baseline", baseline, {}))
        for label, code, options in plans:
            out = scratch / label.replace(" ", "-") / path.stem
            spec = {
                "kind": "compress",
                "paths": [str(path)],
                "target": args.target,
                "formats": args.formats,
                "out_dir": str(out),
                "options": options,
                "threads": args.threads,
            }
            result = child(spec, code)
            [res] = result["report"]["results"]
            value, met = rescore(fresh, path, Path(res["output"]), target)
            runs[label] = {
                "seconds": result["seconds"],
                "maxrss": result["maxrss"],
                "bytes": res["bytes"],
                "setting": f"{res['format']} {res['setting']}",
                "probes": res["total_probes"],
                "full_size_encodes": res.get("full_size_encodes"),
                "rescored": value,
                "met": met,
            }
            print(f"  {label}: {runs[label]}", file=sys.stderr, flush=True)
        rows.append(
            {
                "photo": path.name,
                "size": _size(path),
                "encode_seconds": sum(e["seconds"] for e in encode["encodes"].values()),
                "encodes": encode["encodes"],
                "runs": runs,
            }
        )
    return {"rows": rows}


def _size(path: Path) -> tuple[int, int]:
    from PIL import Image as PILImage

    with PILImage.open(path) as im:
        return im.size


def proxies_part(args: argparse.Namespace, paths: list[Path], photo_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Predicted minus actual score, and predicted over actual bytes, at the full-size search's answers."""
    import numpy as np

    from optimizer.codecs import get_codec
    from optimizer.evaluator import Evaluator
    from optimizer.imageio import load_image
    from optimizer.transforms import resize
    from optimizer.tuning.proxy import build_proxy
    from optimizer.tuning.target import Target

    target = Target.parse(args.target)
    evaluator = Evaluator(metrics=[target.metric]).load()
    answers = _answers([r for r in photo_rows if "full-size search" in r["runs"]])
    errors: dict[str, dict[str, list[float]]] = {}

    def measure(kind: str, image: Any, settings: dict[str, dict[str, Any]], proxies: dict[str, Any]) -> None:
        full = evaluator.for_reference(image)
        scorers = {
            name: (evaluator.for_reference(p.image if hasattr(p, "image") else p), p) for name, p in proxies.items()
        }
        for fmt, params in settings.items():
            codec = get_codec(fmt)
            data = codec.encode(image, params)
            truth = target.value_of(full.score(codec.decode(data), metrics=[target.metric]))
            for name, (scorer, proxy) in scorers.items():
                proxy_image = proxy.image if hasattr(proxy, "image") else proxy
                pdata = codec.encode(proxy_image, params)
                predicted = target.value_of(scorer.score(codec.decode(pdata), metrics=[target.metric]))
                fraction = proxy_image.pixels / image.pixels
                entry = errors.setdefault(f"{kind}: {name}", {"score": [], "bytes": []})
                entry["score"].append(predicted - truth)
                entry["bytes"].append(len(pdata) / fraction / len(data) - 1.0)

    for path in paths:
        image = load_image(path)
        proxies = {
            "tiles 16x256 (used)": build_proxy(image, tile=256, tiles=16, min_pixels=1),
            "tiles 36x256": build_proxy(image, tile=256, tiles=36, min_pixels=1),
            "downscale 1/4": resize(image, scale=0.25, filter="lanczos"),
        }
        measure("photos", image, answers.get(path.name, {}), proxies)
        del image
    kodak = sorted((DATASETS / "kodak").glob("*.png"))[: args.kodak_proxies]
    for path in kodak:
        image = load_image(path)
        proxies = {
            "tiles 8x128": build_proxy(image, tile=128, tiles=8, min_pixels=1),
            "downscale 1/2": resize(image, scale=0.5, filter="lanczos"),
        }
        settings = {f: {**REFERENCE_SETTINGS[f]} for f in args.formats}
        measure("kodak", image, settings, proxies)
    summary = {}
    for name, entry in errors.items():
        score = np.array(entry["score"])
        size = np.array(entry["bytes"])
        summary[name] = {
            "n": len(score),
            "score_mean": float(score.mean()),
            "score_mae": float(np.abs(score).mean()),
            "score_max": float(np.abs(score).max()),
            "bytes_mae": float(np.abs(size).mean()),
            "bytes_max": float(np.abs(size).max()),
        }
    return summary


def _answers(photo_rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """The full-size search's chosen setting per photo (its format only) plus the reference settings."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for row in photo_rows:
        settings = {f: dict(REFERENCE_SETTINGS[f]) for f in row["encodes"]}
        fmt, _, value = row["runs"]["full-size search"]["setting"].partition(" ")
        if fmt in settings and value not in ("None", ""):
            key = "distance" if fmt == "jxl" else "quality"
            settings[fmt] = {key: float(value) if fmt == "jxl" else int(float(value))}
        out[row["photo"]] = settings
    return out


def kodak_part(args: argparse.Namespace, baseline: Path | None, scratch: Path) -> dict[str, Any]:
    paths = [str(p) for p in sorted((DATASETS / "kodak").glob("*.png"))[: args.kodak]]
    if not paths:
        raise SystemExit(f"no Kodak images in {DATASETS / 'kodak'} (set OPTIMIZER_DATASETS)")
    out: dict[str, Any] = {"images": len(paths)}
    plans: list[tuple[str, Path]] = [("now", REPO)]
    if baseline is not None:
        plans.append(("baseline", baseline))
    for label, code in plans:
        spec = {
            "kind": "compress",
            "paths": paths,
            "target": args.target,
            "formats": args.formats,
            "out_dir": str(scratch / f"kodak-{label}"),
            "options": {},
            "threads": args.threads,
        }
        result = child(spec, code)
        totals = result["report"]["totals"]
        out[label] = {
            "seconds_per_image": result["report"]["totals"]["seconds"] / len(paths),
            "probes_per_image": totals["probes_per_image"],
            "bytes": totals["bytes"],
            "met": totals["met"],
            "chosen": totals["chosen_formats"],
        }
        print(f"kodak {label}: {out[label]}", file=sys.stderr, flush=True)
    return out


# --------------------------------------------------------------------------------------------------
# Report


def markdown(
    args: argparse.Namespace,
    photos: dict[str, Any] | None,
    proxies: dict[str, Any] | None,
    kodak: dict[str, Any] | None,
    minutes: float,
) -> str:
    from optimizer.statistics import statistic

    lines = [
        "## Per-image compression at photo scale: proxy search, full-size confirmation (`bench_compress_scale.py`)",
        "",
        f"`python benchmarks/bench_compress_scale.py {' '.join(sys.argv[1:])}`: target {args.target}, formats "
        f"{','.join(args.formats)}, torch on {args.threads} thread(s) in every run, encoders on their default "
        f"threads; each run a fresh process; {platform.machine()}, {os.cpu_count()} CPUs; {minutes:.1f} min in all. "
        f"Baseline: `{args.baseline_ref}` (today's full-size search).",
        "",
    ]
    if photos is not None:
        lines += [
            "| photo | size | one encode per format | now: wall | now / encodes | baseline: wall | baseline / encodes | "
            "full-size search: wall | now: peak RSS | baseline: peak RSS | full-size search: peak RSS | now: file | "
            "full-size search: file | bytes vs full-size search | re-scored from disk (now) | probes now (full size) / "
            "full-size search / baseline |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        ratios, deltas, met = [], [], []
        for row in photos["rows"]:
            runs = row["runs"]
            now = runs["proxy"]
            full = runs.get("full-size search", now)
            base = runs.get("baseline")
            enc = row["encode_seconds"]
            ratios.append(now["seconds"] / enc)
            deltas.append(now["bytes"] / full["bytes"] - 1)
            met.append(all(r["met"] for r in runs.values()))
            w, h = row["size"]
            lines.append(
                f"| {row['photo']} | {w}x{h} ({w * h / 1e6:.1f} MP) | {enc:.1f} s | {now['seconds']:.1f} s | "
                f"**{now['seconds'] / enc:.2f}** | {_s(base, 'seconds')} | "
                f"{(base['seconds'] / enc) if base else float('nan'):.2f} | {full['seconds']:.1f} s | "
                f"**{now['maxrss'] / 2**30:.2f} GiB** | {_gib(base)} | {full['maxrss'] / 2**30:.2f} GiB | "
                f"{now['setting']}, {now['bytes']:,} B | {full['setting']}, {full['bytes']:,} B | "
                f"{now['bytes'] / full['bytes'] - 1:+.1%} | {now['rescored']:.2f} ({'met' if now['met'] else 'MISSED'}) | "
                f"{now['probes']} ({now['full_size_encodes']}) / {full['probes']} / {base['probes'] if base else '-'} |"
            )
        total_now = sum(r["runs"]["proxy"]["bytes"] for r in photos["rows"])
        total_full = sum(r["runs"].get("full-size search", r["runs"]["proxy"])["bytes"] for r in photos["rows"])
        lines += [
            "",
            f"- Wall time over one full-size encode per format: median {statistic(ratios, 'median'):.2f} "
            f"(max {max(ratios):.2f}); bytes against the full-size search: {total_now / total_full - 1:+.2%} in all "
            f"(per photo {min(deltas):+.1%} to {max(deltas):+.1%}); files meeting the target when re-scored at full "
            f"size from disk by a fresh evaluator: {sum(met)}/{len(met)} photos, every run.",
            "- One encode per format: "
            + "; ".join(
                f"{r['photo']}: " + ", ".join(f"{k} {v['seconds']:.2f} s" for k, v in r["encodes"].items())
                for r in photos["rows"]
            )
            + f" (settings {REFERENCE_SETTINGS}).",
            "",
        ]
    if proxies is not None:
        lines += [
            "Proxy accuracy at the full-size search's answer (photos: the chosen format at its answer, the other "
            "formats at the reference settings; Kodak: the reference settings): predicted minus full-size score, "
            "and proxy bytes scaled by the pixel ratio against full-size bytes.",
            "",
            "| proxy | cases | score error mean | mean abs | max abs | bytes error mean abs | max abs |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, s in proxies.items():
            lines.append(
                f"| {name} | {s['n']} | {s['score_mean']:+.2f} | {s['score_mae']:.2f} | {s['score_max']:.2f} | "
                f"{s['bytes_mae']:.1%} | {s['bytes_max']:.1%} |"
            )
        lines.append("")
    if kodak is not None:
        now = kodak["now"]
        base = kodak.get("baseline")
        lines += [
            f"Kodak ({kodak['images']} images, below the proxy threshold: searched at full size as before): "
            f"now {now['seconds_per_image']:.2f} s and {now['probes_per_image']:.2f} probes per image, "
            f"{now['bytes']:,} bytes, {now['met']} met, chosen {now['chosen']}"
            + (
                f"; baseline {base['seconds_per_image']:.2f} s and {base['probes_per_image']:.2f} probes per image, "
                f"{base['bytes']:,} bytes, {base['met']} met, chosen {base['chosen']}."
                if base
                else "."
            ),
            "",
        ]
    return "\n".join(lines)


def _s(run: dict[str, Any] | None, key: str) -> str:
    return f"{run[key]:.1f} s" if run else "-"


def _gib(run: dict[str, Any] | None) -> str:
    return f"{run['maxrss'] / 2**30:.2f} GiB" if run else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", default="kleiber,seeding,dragonfly")
    parser.add_argument("--target", default="ssimulacra2:80")
    parser.add_argument("--formats", default="avif,webp,jpeg")
    parser.add_argument("--baseline-ref", default="main", help="git ref of today's search ('none' to skip)")
    parser.add_argument("--parts", default="photos,proxies,kodak")
    parser.add_argument("--kodak", type=int, default=24)
    parser.add_argument("--kodak-proxies", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch threads in every run")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "optimizer-bench")
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    parser.add_argument("--quick", action="store_true", help="photos: skip the full-size search (time and memory only)")
    args = parser.parse_args()
    args.formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    parts = set(args.parts.split(","))
    started = time.perf_counter()
    sys.path.insert(0, str(REPO))
    import torch

    torch.set_num_threads(args.threads)
    paths = photo_paths([p.strip() for p in args.photos.split(",") if p.strip()], args.cache)
    with tempfile.TemporaryDirectory(prefix="bench-compress-scale-") as tmp:
        scratch = Path(tmp)
        baseline = None
        if args.baseline_ref != "none":
            baseline = export_ref(args.baseline_ref, scratch / "baseline-code")
        raw: dict[str, Any] = {}

        def save(part: str, value: Any) -> Any:
            raw[part] = value
            if args.json is not None:  # after every part: a failure later keeps what was measured
                args.json.write_text(json.dumps(raw, indent=2))
            return value

        photos = save("photos", photos_part(args, paths, baseline, scratch)) if "photos" in parts else None
        proxies = (
            save("proxies", proxies_part(args, paths, photos["rows"] if photos else [])) if "proxies" in parts else None
        )
        kodak = save("kodak", kodak_part(args, baseline, scratch)) if "kodak" in parts else None
    minutes = (time.perf_counter() - started) / 60
    print(markdown(args, photos, proxies, kodak, minutes))


if __name__ == "__main__":
    main()
