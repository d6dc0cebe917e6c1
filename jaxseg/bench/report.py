"""What `jaxseg bench` runs and prints: tables on stdout, a dict for --json."""

from __future__ import annotations

import sys

from jaxseg.bench import layers as layers_lib
from jaxseg.errors import ConfigError

# A model's transposed convs use the adjoint of its conv impl (as jaxseg.models does).
_TRANSPOSE_OF = {"im2col": "col2im"}


def _log(msg):
  print(msg, file=sys.stderr, flush=True)


def _header(info, peak=None):
  lines = [f"device: {info['platform']} / {info['device_kind']} x{info['device_count']}, "
           f"jax {info['jax']}, {info['host_cpus']} host cpus, "
           f"load average {' '.join(f'{v:.2f}' for v in info['load_avg'])}, "
           f"GLIBC_TUNABLES={info.get('glibc_tunables') or '(unset)'}, "
           f"XLA_FLAGS={info.get('xla_flags') or '(unset)'}, "
           f"C++ conv kernels {'on' if info.get('cpu_conv_kernels') else 'off'}"]
  if peak:
    per = ", ".join(f"{n}^2 {g:.0f}" for n, g in peak["per_size"].items())
    lines.append(f"GEMM peak (jnp.dot float32): {peak['gflops']:.0f} GFLOP/s ({per})")
  return "\n".join(lines)


def _impls_for(kind, requested, available):
  if requested is None:
    impls = list(available)
  else:
    impls = []
    for name in requested:
      name = _TRANSPOSE_OF.get(name, name) if kind == "conv_transpose" else name
      if name in available and name not in impls:
        impls.append(name)
  if "lax" not in impls:  # the reference for the check and the ratios
    impls.insert(0, "lax")
  return impls


def _check_impls(requested):
  from jaxseg.bench.conv import impls_available
  if requested is None:
    return
  known = set(impls_available("conv")) | set(impls_available("conv_transpose"))
  bad = [i for i in requested if i not in known]
  if bad:
    raise ConfigError(f"--impls: unknown impl {', '.join(bad)}; choose from {', '.join(sorted(known))}")


def _ms(v):
  return f"{v * 1e3:9.2f}" if v is not None else "        -"


def format_conv_table(rows) -> str:
  head = ("| layer | shape | x | impl | fwd ms | fwd+bwd ms | GFLOP/s fwd | GFLOP/s f+b "
          "| % peak f+b | vs lax f+b | vs torch f+b | note |")
  out = [head, "|" + "---|" * 12]
  for r in rows:
    if r["status"] != "ok":
      out.append(f"| {r['layer']} | {r['shape']} | {r['count']} | {r['impl']} | - | - | - | - | - "
                 f"| - | - | {r['status']}: {r['note']} |")
      continue
    pct = f"{100 * r['frac_peak_fwdbwd']:.0f}%" if "frac_peak_fwdbwd" in r else "-"
    vs = f"{r['vs_lax_fwdbwd']:.2f}x" if "vs_lax_fwdbwd" in r else "-"
    vt = r.get("vs_torch_fwdbwd", r.get("auto_vs_torch"))
    vt = f"{vt:.2f}x (auto/torch)" if vt is not None else "-"
    fwd = _ms(r.get("fwd_s")).strip()
    gf = f"{r['gflops_fwd']:.0f}" if "gflops_fwd" in r else "-"
    out.append(f"| {r['layer']} | {r['shape']} | {r['count']} | {r['impl']} | {fwd} "
               f"| {_ms(r['fwdbwd_s']).strip()} | {gf} | {r['gflops_fwdbwd']:.0f} "
               f"| {pct} | {vs} | {vt} | {r['note']} |")
  return "\n".join(out)


def model_totals(rows) -> list[dict]:
  """Per impl: fwd+bwd seconds summed over a model's conv layers (times their count)."""
  by_impl: dict = {}
  for r in rows:
    if r["kind"] != "conv":
      continue
    t = by_impl.setdefault(r["impl"], {"impl": r["impl"], "fwdbwd_s": 0.0, "layers": 0, "missing": 0})
    if "fwdbwd_s" in r:
      t["fwdbwd_s"] += r["fwdbwd_s"] * r["count"]
      t["layers"] += 1
    else:
      t["missing"] += 1
  return list(by_impl.values())


def run_conv(args) -> dict:
  import jax
  from jaxseg.bench import conv as conv_lib
  from jaxseg.bench.timing import device_info, gemm_peak
  _check_impls(args.impls)
  models = tuple(args.model.split(",")) if args.model else ("fcn", "unet_small")
  info = device_info()
  _log("measuring the GEMM peak ...")
  peak = gemm_peak(args.gemm_sizes, steps=args.steps)
  print(_header(info, peak))
  result = {"what": "conv", **info, "gemm_peak_gflops": peak["gflops"],
            "gemm_per_size": peak["per_size"], "batch_size": args.batch_size,
            "image_size": args.image_size, "models": {}, "rows": [], "wrong": []}
  for model in models:
    layers, source = layers_lib.model_layers(model, batch=args.batch_size, image_size=args.image_size)
    size = ("x".join(map(str, args.image_size)) if isinstance(args.image_size, tuple)
            else f"{args.image_size}x{args.image_size}")
    print(f"\n## {model}: {len(layers)} distinct conv layers ({source}), batch {args.batch_size}, {size}")
    rows = []
    for layer in layers:
      available = conv_lib.impls_available(layer.kind)
      impls = _impls_for(layer.kind, args.impls, available)
      _log(f"{model} {layer.name} {layer.describe()}: {', '.join(impls)}")
      rows += conv_lib.bench_layer(layer, impls, steps=args.steps, warmup=args.warmup,
                                   budget=args.budget, peak_gflops=peak["gflops"],
                                   explicit=args.impls is not None, peers=args.peers)
    print(format_conv_table(rows))
    totals = model_totals(rows)
    lax_total = next((t["fwdbwd_s"] for t in totals if t["impl"] == "lax"), None)
    print("\nsum over the conv layers (fwd+bwd, x count):")
    for t in totals:
      rel = f" = {t['fwdbwd_s'] / lax_total:.2f}x lax" if lax_total and not t["missing"] else ""
      miss = f" ({t['missing']} layers not timed)" if t["missing"] else ""
      print(f"  {t['impl']:8s} {t['fwdbwd_s'] * 1e3:9.1f} ms{rel}{miss}")
    pairs = [(a, t) for a in rows for t in rows if a["impl"] == "auto" and t["impl"] == "torch"
             and a["layer"] == t["layer"] and "fwdbwd_s_in_turn" in a and "fwdbwd_s" in t]
    if pairs:
      auto_s = sum(a["fwdbwd_s_in_turn"] * a["count"] for a, _ in pairs)
      torch_s = sum(t["fwdbwd_s"] * t["count"] for _, t in pairs)
      totals.append({"impl": "auto/torch in turn", "auto_fwdbwd_s": auto_s, "torch_fwdbwd_s": torch_s,
                     "ratio": auto_s / torch_s, "layers": len(pairs)})
      print(f"  auto vs torch, in turn, over {len(pairs)} layers (x count): {auto_s * 1e3:.1f} ms vs "
            f"{torch_s * 1e3:.1f} ms = {auto_s / torch_s:.2f}x")
    result["models"][model] = {"layers_source": source, "totals": totals}
    result["rows"] += rows
    result["wrong"] += [f"{r['model']} {r['layer']} {r['impl']}" for r in rows if r["status"] == "wrong"]
  if args.sweep:
    result["sweep"] = conv_sweep(args, models[0], peak["gflops"])
    if args.plot:
      from jaxseg.bench import plot
      plot.plot_conv_sweep(result["sweep"], args.plot, title=f"{models[0]} {args.layer}")
      print(f"\nplot: {args.plot}")
  del jax
  return result


def conv_sweep(args, model, peak) -> list[dict]:
  """One layer of the table, every impl, over image sizes (at --batch-size) and batches."""
  from jaxseg.bench import conv as conv_lib
  base = layers_lib.table_layers(model, batch=args.batch_size, image_size=args.image_size)
  layer = next((l for l in base if l.name == args.layer), None)
  if layer is None:
    raise ConfigError(f"--layer: {model} has no layer {args.layer!r} "
                      f"(layers: {', '.join(l.name for l in base)})")
  points = [("image_size", s, args.batch_size, s) for s in args.sizes]
  points += [("batch", b, b, args.image_size) for b in args.batches]
  out = []
  print(f"\n## sweep: {model} {layer.name} ({layer.describe()} at {args.image_size}), "
        "fwd+bwd ms / XLA temp MB; matrix nnz per image")
  print("| sweep | value | impl | fwd+bwd ms | GFLOP/s | temp MB | matrix nnz | matrix MB | note |")
  print("|---|---|---|---|---|---|---|---|---|")
  for axis, value, batch, size in points:
    sl = conv_lib.scaled(layer, batch=batch, image_size=size, base_size=args.image_size)
    impls = _impls_for(sl.kind, args.impls, conv_lib.impls_available(sl.kind))
    _log(f"sweep {axis}={value}: {sl.describe()}")
    rows = conv_lib.bench_layer(sl, impls, steps=args.steps, warmup=args.warmup,
                                budget=args.budget, peak_gflops=peak,
                                explicit=args.impls is not None, memory=True)
    for r in rows:
      r.update(sweep=axis, value=value, batch_size=batch, image_size=size)
      t = f"{r['fwdbwd_s'] * 1e3:.2f}" if "fwdbwd_s" in r else "-"
      g = f"{r['gflops_fwdbwd']:.0f}" if "gflops_fwdbwd" in r else "-"
      m = f"{r['fwdbwd_temp_mb']:.1f}" if "fwdbwd_temp_mb" in r else "-"
      note = r["note"] if r["status"] == "ok" else f"{r['status']}: {r['note']}"
      print(f"| {axis} | {value} | {r['impl']} | {t} | {g} | {m} | {r.get('matrix_nnz', '-')} "
            f"| {r.get('matrix_mb', 0):.0f} | {note} |")
    out += rows
  return out


def _size_text(size) -> str:
  """256 -> "256^2"; (32, 64, 64) -> "32x64x64"."""
  return "x".join(map(str, size)) if isinstance(size, (tuple, list)) else f"{size}^2"


def run_train(args) -> dict:
  from jaxseg.bench.timing import device_info
  from jaxseg.bench.train import bench_train
  from jaxseg.models import MODELS
  model = args.model or "fcn"
  if model not in MODELS:
    raise ConfigError(f"--model: unknown model {model!r}; choose one of {', '.join(MODELS)}")
  _check_impls(args.impls)
  impls = list(args.impls or ("auto",))
  info = device_info()
  print(_header(info))
  if args.peers:
    from jaxseg.bench import peers
    if len(impls) > 1:
      raise ConfigError("--impls: one impl with --peers")
    res = peers.run_interleaved(model, batch=args.batch_size, size=args.image_size,
                                steps=args.steps, rounds=args.rounds, warmup=args.warmup,
                                conv_impl=impls[0], step_kind=args.step, log=_log)
    print(format_peers(res))
    j = res["frameworks"]["jaxseg"]
    result = {"what": "train", "model": model, "batch_size": args.batch_size,
              "image_size": args.image_size, "conv_impl": impls[0], "step": args.step,
              "step_seconds": j["step_seconds"], "images_per_second": args.batch_size / j["step_seconds"],
              "peak_rss_mb": j.get("peak_rss_mb"), "peers": res, **info}
    result.update({k: v for k, v in res.items() if k.startswith("jaxseg_over_") and "round" not in k})
    return result
  results = []
  for impl in impls:
    _log(f"train step: {model}, batch {args.batch_size}, {_size_text(args.image_size)}, conv {impl}")
    r = bench_train(model, batch_size=args.batch_size, image_size=args.image_size, conv_impl=impl,
                    steps=args.steps, warmup=args.warmup, step_kind=args.step)
    results.append(r)
  print(format_train(results))
  result = dict(results[0])
  if len(results) > 1:
    result["impls"] = {r["conv_impl"]: r["step_seconds"] for r in results}
  if args.sweep:
    result["sweep"] = train_sweep(args, model, impls[0])
    if args.plot:
      from jaxseg.bench import plot
      plot.plot_train_sweep(result["sweep"], args.plot, title=f"{model} train step ({impls[0]})")
      print(f"\nplot: {args.plot}")
  return result


def format_train(results) -> str:
  out = ["| model | impl | batch | size | step s | images/s | GFLOP/s | XLA temp MB | peak RSS MB | compile s |",
         "|---|---|---|---|---|---|---|---|---|---|"]
  for r in results:
    g = f"{r['gflops']:.0f}" if "gflops" in r else "-"
    t = f"{r['xla_temp_mb']:.0f}" if "xla_temp_mb" in r else "-"
    size = r["image_size"]
    size = "x".join(map(str, size)) if isinstance(size, (tuple, list)) else size
    out.append(f"| {r['model']} | {r['conv_impl']} | {r['batch_size']} | {size} "
               f"| {r['step_seconds']:.4f} | {r['images_per_second']:.1f} | {g} | {t} "
               f"| {r['peak_rss_mb']:.0f} | {r['compile_seconds']:.1f} |")
  return "\n".join(out)


def format_peers(res) -> str:
  out = [f"\n## train step, {res['model']}, batch {res['batch_size']}, {_size_text(res['image_size'])}: "
         f"{res['rounds']} rounds x {res['steps_per_block']} steps, frameworks in turn",
         "| framework | version | params | median step s | min s | images/s | jaxseg / this | per round "
         "| step peak RSS MB | RSS before steps MB | setup peak RSS MB |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]
  mb = lambda v: f"{v:.0f}" if v is not None else "-"
  for fw, r in res["frameworks"].items():
    ratio = res.get(f"jaxseg_over_{fw}")
    rounds = res.get(f"jaxseg_over_{fw}_per_round")
    params = f"{r['params']:,}" if r.get("params") is not None else "-"
    out.append(f"| {fw} | {r.get('version', '')} | {params} | {r['step_seconds']:.4f} "
               f"| {r['step_seconds_min']:.4f} "
               f"| {res['batch_size'] / r['step_seconds']:.1f} "
               f"| {f'{ratio:.2f}x' if ratio else '1.00x'} "
               f"| {' '.join(f'{v:.2f}' for v in rounds) if rounds else '-'} "
               f"| {mb(r.get('step_peak_rss_mb'))} | {mb(r.get('rss_before_steps_mb'))} "
               f"| {mb(r.get('setup_peak_rss_mb', r.get('peak_rss_mb')))} |")
  if not res.get("params_match", True):
    out.append("\nWARNING: the frameworks' models have different parameter counts")
  return "\n".join(out)


def train_sweep(args, model, impl) -> list[dict]:
  """Step time and memory over image sizes (at --batch-size) and batch sizes (at --image-size)."""
  from jaxseg.bench.train import bench_train
  points = [("image_size", s, args.batch_size, s) for s in args.sizes]
  points += [("batch", b, b, args.image_size) for b in args.batches]
  out = []
  print(f"\n## sweep: {model} train step ({impl})")
  print("| sweep | value | step s | images/s | XLA temp MB | peak RSS MB |")
  print("|---|---|---|---|---|---|")
  for axis, value, batch, size in points:
    _log(f"sweep {axis}={value}")
    r = bench_train(model, batch_size=batch, image_size=size, conv_impl=impl, steps=args.steps,
                    warmup=args.warmup, step_kind=args.step)
    r.update(sweep=axis, value=value)
    out.append(r)
    t = f"{r['xla_temp_mb']:.0f}" if "xla_temp_mb" in r else "-"
    print(f"| {axis} | {value} | {r['step_seconds']:.4f} | {r['images_per_second']:.1f} | {t} "
          f"| {r['peak_rss_mb']:.0f} |")
  return out
