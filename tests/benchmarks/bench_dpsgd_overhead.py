"""Where our DP-SGD step's fixed cost goes on a GPU, and candidate steps that cut it, in one call.

Not collected by pytest. Made for one short GPU lease (docs/benchmarks.md, session 4: the engine's
step costs 2.33× the non-private one at batch 512 and 3.9× at 4096 on an H200, target ≤ 1.6×; the
non-private step is 2.6 ms at both sizes, so it is fixed cost: launches and Python). Three parts,
each writing JSON lines to ``--out/results.jsonl`` (and the profiler tables to ``--out/profile.txt``):

1. ``check``: each candidate's clipped sum (σ = 0) and whole privatized gradient (σ > 0, the same
   noise seed) of one batch against the engine's (``privatized_gradient``, and ``vmap`` for the clipped
   sum), on the device, TF32 off: ‖Δ‖/‖ref‖ over all coordinates. A candidate that fails is not timed.
2. ``profile``: the engine's step at each batch under ``torch.profiler`` (top ops by device time and by
   CPU time, kernel launches and kernel time per step) and the host synchronizations per step counted
   by ``torch.cuda.set_sync_debug_mode("warn")``; the same counts for every candidate.
3. ``time``: every runner in interleaved rounds (each round: every runner in turn, ``--warmup`` steps,
   then ``--steps`` timed steps between two ``torch.cuda.synchronize()``; each runner is built once per
   batch size, so the graphs are captured once), medians of the rounds, in examples/s and ms/step, and
   each one's overhead against the non-private step (also the median of the ratios within a round).
   The profile part also gives each runner's host time per call (the host runs ahead of the device
   when a step has no sync, so a call's time is then the host's cost alone).

The candidates, cumulative, each a flag of :class:`Candidate` (a ``DPSGDTrainer`` whose ``step`` is
rewritten here, so that what wins can be ported into ``privacy/dpsgd`` as it is):

- ``lazy_loss``: the batch's summed loss stays a device tensor (no ``float()`` per chunk: one sync less).
- ``host_sampler``: the Poisson draw on a cpu generator (OS-CSPRNG-seeded like the engine's, the same
  ``poisson_sample``), the indices copied over from pinned memory without blocking: no sync at all in a
  step, so the host can queue the next step while the device runs this one.
- ``lean``: fewer launches and less Python: the layer list and the parameter list cached, one chunk's
  sums used as they are (no ``zeros_like`` and ``+=``), the noise added and divided with ``torch._foreach``
  ops in the engine's arithmetic order (randn per parameter in ``named_parameters`` order, as now).
- ``unfold``: per-example conv weight gradients by unfold + ``bmm`` (as Opacus does) instead of one
  grouped convolution with B groups; the unfold is a pad and one strided copy (:func:`unfold`), since
  ``F.unfold`` (im2col) launches one kernel per example on cuda.
- ``graph``: (cuda only) everything after the draw (gather, forward, backward, per-example pieces,
  clipping, noise, optimizer) captured once per padded batch size as a CUDA graph and replayed; the
  sampled batch is padded to a multiple of ``--bucket`` and the padding's clip factors are 0 (exact);
  the summed loss is masked. Graphs are captured before timing for every padded size within ±5 sd.

    python tests/benchmarks/bench_dpsgd_overhead.py --device cuda --out /tmp/o [--batches 512 4096]
    python tests/benchmarks/bench_dpsgd_overhead.py --device cpu --tiny --out /tmp/o   # checks the script

Needs torch and MNIST (``MNIST_DIR``, the four IDX files); no Opacus, no accounting (σ is fixed: the
values the session-4 runs calibrated for ε = 3, 40 epochs).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import time
import traceback
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional  # noqa: E402

from privacy.dpsgd import engine, layerwise  # noqa: E402
from privacy.dpsgd.datasets import load_mnist  # noqa: E402
from privacy.dpsgd.engine import (DPSGDConfig, DPSGDTrainer, _derived_seed, factors_from_norms,  # noqa: E402
                                  make_generator, poisson_sample, trainable_parameters)
from privacy.dpsgd.models import build_model  # noqa: E402

MNIST = Path(os.environ.get("MNIST_DIR", ROOT.parent.parent / "shared" / "data" / "mnist"))
SIGMA = {512: 1.0686, 4096: 2.4851}  # session 4's PLD calibration for ε = 3, δ = 1e-5, 40 epochs
VARIANTS = {  # cumulative
    "lazy_loss": dict(lazy_loss=True),
    "no_sync": dict(lazy_loss=True, host_sampler=True),
    "lean": dict(lazy_loss=True, host_sampler=True, lean=True),
    "lean_unfold": dict(lazy_loss=True, host_sampler=True, lean=True, unfold=True),
    "graph": dict(lazy_loss=True, host_sampler=True, lean=True, unfold=True, graph=True),
}
RESULTS: Path | None = None
CHECK_PHYSICAL = 40  # the check's chunks: its batch in three, so the sums over chunks are checked too


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def emit(record: dict) -> None:
    line = json.dumps(record)
    print(line, flush=True)
    if RESULTS is not None:
        with RESULTS.open("a") as f:
            f.write(line + "\n")


def synchronize(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


# --- candidate pieces ---------------------------------------------------------------------------


def unfold(x: torch.Tensor, kernel, padding, stride, dilation) -> torch.Tensor:
    """F.unfold's [B, C·kh·kw, T] as one pad and one strided copy: F.unfold (im2col) launches a kernel per
    example on cuda and loops over them on cpu."""
    if any(padding):
        x = functional.pad(x, (padding[1], padding[1], padding[0], padding[0]))
    batch, channels, height, width = x.shape
    rows = (height - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    columns = (width - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
    s_batch, s_channel, s_height, s_width = x.stride()
    windows = x.as_strided((batch, channels, kernel[0], kernel[1], rows, columns),
                           (s_batch, s_channel, s_height * dilation[0], s_width * dilation[1],
                            s_height * stride[0], s_width * stride[1]))
    return windows.reshape(batch, channels * kernel[0] * kernel[1], rows * columns)


class UnfoldConv2d(layerwise._Conv2d):
    """∇W_i = g_i · unfold(a_i)ᵀ: [B, out, T] @ [B, T, C·k·k], one batched product (Opacus' conv grad sampler)."""

    def __init__(self, module: nn.Conv2d, activation, grad_output) -> None:
        layerwise._Layer.__init__(self, module, activation, grad_output)
        batch, out = grad_output.shape[:2]
        self.g = grad_output.reshape(batch, out, -1)  # [B, out, T]
        columns = unfold(activation, module.kernel_size, module.padding, module.stride, module.dilation)
        self.per_example = torch.bmm(self.g, columns.transpose(1, 2))  # [B, out, C·k·k]


def layer_kinds(layers, unfold: bool):
    return [UnfoldConv2d if unfold and isinstance(module, nn.Conv2d) else layerwise._kind(module)
            for _, module in layers]


def clipped_sums(model, layers, kinds, loss_fn, features, labels, clip_norm, *, valid=None, per_example_loss=None):
    """(Σ_i c_i ∇_i by parameter name, summed loss as a device tensor): layerwise.norms_and_clipped_sum
    without the float(); ``valid`` [B] (0/1) zeroes padding's clip factors, and then the loss is
    ``per_example_loss``'s (a vmap of ``loss_fn``) masked sum."""
    output, seen = layerwise._capture(model, layers, features)
    if valid is None:
        objective = loss_fn(output, labels) * features.shape[0]
        loss_sum = objective.detach()
    else:
        losses = per_example_loss(output, labels)
        objective = losses.sum()
        loss_sum = (losses.detach() * valid).sum()
    grads = torch.autograd.grad(objective, [seen[name][1] for name, _ in layers])
    pieces = [kind(module, seen[name][0], g) for (name, module), kind, g in zip(layers, kinds, grads)]
    norms = torch.stack([piece.squared_norms() for piece in pieces], dim=1).sum(dim=1).sqrt()
    factors = factors_from_norms(norms, clip_norm)
    if valid is not None:
        factors = factors * valid
    sums = {}
    for (prefix, _), piece in zip(layers, pieces):
        for parameter, value in piece.clipped_sums(factors).items():
            sums[f"{prefix}.{parameter}" if prefix else parameter] = value
    return sums, loss_sum


class Candidate(DPSGDTrainer):
    """The engine's trainer with the step rewritten by the flags of the module's docstring."""

    def __init__(self, model, optimizer, features, labels, config, *, seed=None, device=None, lazy_loss=False,
                 host_sampler=False, lean=False, unfold=False, graph=False, bucket=64):
        super().__init__(model, optimizer, features, labels, config, seed=seed, device=device)
        if self.method != "layerwise":
            raise ValueError("the candidates are layerwise only")
        self.lazy_loss, self.host_sampler, self.lean, self.graph = lazy_loss, host_sampler, lean, graph
        if host_sampler:  # the engine's sampler, on a cpu generator
            self.sampler_generator = make_generator("cpu", _derived_seed(seed, "sampler"))
        self.cuda = self.device.type == "cuda"
        self.parameters = list(trainable_parameters(model).items())
        self.layers = layerwise._parametric_layers(model)
        self.kinds = layer_kinds(self.layers, unfold)
        self.graphs = Graphs(self, bucket) if graph else None

    def sample(self):
        """(indices on the device, batch size as an int)."""
        indices = poisson_sample(self.num_examples, self.config.sampling_probability, self.sampler_generator)
        size = int(indices.numel())
        if self.host_sampler and self.cuda:
            indices = indices.pin_memory().to(self.device, non_blocking=True)
        return indices, size

    def noisy_gradient(self, features, labels):
        """The engine's privatized_gradient (all chunks, noise, / E), with the loss left on the device."""
        config = self.config
        noise_std = config.noise_multiplier * config.clip_norm
        if not self.lean:
            sums = {name: torch.zeros_like(p) for name, p in self.parameters}
            loss_sum = torch.zeros((), device=self.device)
            for start in range(0, features.shape[0], config.physical_batch_size):
                chunk = slice(start, start + config.physical_batch_size)
                clipped, chunk_loss = clipped_sums(self.model, self.layers, self.kinds, self.loss_fn, features[chunk],
                                                   labels[chunk], config.clip_norm)
                for name, value in clipped.items():
                    sums[name] += value
                loss_sum = loss_sum + chunk_loss
            noisy = []
            for name, total in sums.items():
                noise = torch.randn(total.shape, generator=self.noise_generator, device=total.device,
                                    dtype=total.dtype)
                noisy.append((total + noise_std * noise) / self.expected_batch_size)
            return noisy, loss_sum
        totals, loss_sum = None, None
        for start in range(0, features.shape[0], config.physical_batch_size):
            chunk = slice(start, start + config.physical_batch_size)
            clipped, chunk_loss = clipped_sums(self.model, self.layers, self.kinds, self.loss_fn, features[chunk],
                                               labels[chunk], config.clip_norm)
            if totals is None:
                totals, loss_sum = [clipped[name] for name, _ in self.parameters], chunk_loss
            else:
                torch._foreach_add_(totals, [clipped[name] for name, _ in self.parameters])
                loss_sum = loss_sum + chunk_loss
        if totals is None:  # an empty batch: noise only
            totals = [torch.zeros_like(p) for _, p in self.parameters]
            loss_sum = torch.zeros((), device=self.device)
        noises = [torch.randn(t.shape, generator=self.noise_generator, device=t.device, dtype=t.dtype) for t in totals]
        torch._foreach_mul_(noises, noise_std)  # (total + σC·noise) / E, in the engine's order of operations
        torch._foreach_add_(noises, totals)
        torch._foreach_div_(noises, self.expected_batch_size)
        return noises, loss_sum

    def apply(self, gradient) -> None:
        for (_, parameter), value in zip(self.parameters, gradient):
            parameter.grad = value
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def step(self):
        indices, size = self.sample()
        self.model.train()
        if self.graphs is not None and self.steps_taken > 0:  # the first step eager: the optimizer's state exists
            loss_sum = self.graphs.step(indices, size)
        else:
            gradient, loss_sum = self.noisy_gradient(self.features[indices], self.labels[indices])
            self.apply(gradient)
        self.steps_taken += 1
        return engine.StepResult(batch_size=size, loss_sum=loss_sum if self.lazy_loss else float(loss_sum))


class Graphs:
    """One CUDA graph per padded batch size: gather, forward, backward, pieces, clip, noise, optimizer step."""

    def __init__(self, trainer: Candidate, bucket: int) -> None:
        self.trainer, self.bucket, self.graphs = trainer, bucket, {}
        loss_fn = trainer.loss_fn
        self.per_example_loss = torch.func.vmap(lambda o, t: loss_fn(o.unsqueeze(0), t.unsqueeze(0)))

    def padded(self, size: int) -> int:
        return max(1, math.ceil(size / self.bucket)) * self.bucket

    def body(self, static, update: bool):
        t, config = self.trainer, self.trainer.config
        valid = (torch.arange(static["index"].shape[0], device=t.device) < static["size"]).to(t.features.dtype)
        totals, loss_sum = None, None
        for start in range(0, static["index"].shape[0], config.physical_batch_size):
            chunk = slice(start, start + config.physical_batch_size)
            index = static["index"][chunk]
            clipped, chunk_loss = clipped_sums(t.model, t.layers, t.kinds, t.loss_fn, t.features[index],
                                               t.labels[index], config.clip_norm, valid=valid[chunk],
                                               per_example_loss=self.per_example_loss)
            if totals is None:
                totals, loss_sum = [clipped[name] for name, _ in t.parameters], chunk_loss
            else:
                torch._foreach_add_(totals, [clipped[name] for name, _ in t.parameters])
                loss_sum = loss_sum + chunk_loss
        if not update:
            return totals, loss_sum
        noises = [torch.randn(x.shape, generator=t.noise_generator, device=x.device, dtype=x.dtype) for x in totals]
        torch._foreach_mul_(noises, config.noise_multiplier * config.clip_norm)
        torch._foreach_add_(noises, totals)
        torch._foreach_div_(noises, t.expected_batch_size)
        for (_, parameter), value in zip(t.parameters, noises):
            parameter.grad = value
        t.optimizer.step()
        return noises, loss_sum

    def capture(self, padded: int):
        t = self.trainer
        static = {"index": torch.zeros(padded, dtype=torch.long, device=t.device),
                  "size": torch.zeros((), dtype=torch.long, device=t.device)}
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up (cuDNN's choices, lazy inits) without noise or update
            for _ in range(2):
                self.body(static, update=False)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        graph.register_generator_state(t.noise_generator)
        with torch.cuda.graph(graph):
            _, loss_sum = self.body(static, update=True)
        for _, parameter in t.parameters:
            parameter.grad = None
        self.graphs[padded] = (graph, static, loss_sum)
        return self.graphs[padded]

    def prepare(self, sizes) -> None:
        for padded in sorted({self.padded(s) for s in sizes}):
            if padded not in self.graphs:
                self.capture(padded)

    def step(self, indices: torch.Tensor, size: int) -> torch.Tensor:
        padded = self.padded(size)
        graph, static, loss_sum = self.graphs.get(padded) or self.capture(padded)
        static["index"][size:].zero_()
        static["index"][:size].copy_(indices, non_blocking=True)
        static["size"].fill_(size)
        graph.replay()
        return loss_sum.clone()


# --- runners -------------------------------------------------------------------------------------


def fresh_cnn(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("cnn", (1, 28, 28), 10)


def make_config(args, x, batch):
    return DPSGDConfig(clip_norm=args.clip, noise_multiplier=SIGMA.get(batch, 1.0),
                       sampling_probability=batch / x.shape[0], physical_batch_size=args.physical)


def trainer_runner(flags):
    def make(x, y, args, batch):
        model = fresh_cnn(args.seed)
        optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
        config = make_config(args, x, batch)
        if flags is None:
            trainer = DPSGDTrainer(model, optimizer, x, y, config, device=args.device, seed=args.seed)
        else:
            trainer = Candidate(model, optimizer, x, y, config, device=args.device, seed=args.seed,
                                bucket=args.bucket or (64 if batch <= 1024 else 128), **flags)
            if trainer.graphs is not None:
                trainer.step()  # eager first step, then every likely padded size captured before timing
                sd = math.sqrt(batch * (1 - config.sampling_probability))
                trainer.graphs.prepare(range(max(0, int(batch - 5 * sd)), int(batch + 5 * sd) + 1))
        return lambda: trainer.step().batch_size
    return make


def plain_runner(x, y, args, batch):
    model = fresh_cnn(args.seed).to(args.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    generator = torch.Generator(device=args.device).manual_seed(args.seed)

    def step() -> int:
        indices = torch.randint(0, x.shape[0], (batch,), generator=generator, device=args.device)
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x[indices]), y[indices]).backward()
        optimizer.step()
        return batch

    return step


def runners(args) -> dict:
    made = {"engine": trainer_runner(None)}
    for name in args.variants:
        if name == "graph" and torch.device(args.device).type != "cuda":
            continue
        made[name] = trainer_runner(VARIANTS[name])
    made["non_private"] = plain_runner
    return made


# --- 1. exactness -------------------------------------------------------------------------------


def relative_error(got: list, want: list) -> float:
    diff = math.sqrt(sum(float((g.double() - w.double()).square().sum()) for g, w in zip(got, want)))
    return diff / max(math.sqrt(sum(float(w.double().square().sum()) for w in want)), 1e-30)


def check(x, y, args) -> dict:
    """Each candidate's clipped sum and noisy gradient of one batch against the engine's, TF32 off."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        batch = min(args.check_batch, x.shape[0])
        generator = torch.Generator().manual_seed(args.seed + 1)
        index = torch.randperm(x.shape[0], generator=generator)[:batch].to(args.device)
        features, labels = x[index], y[index]
        model = fresh_cnn(args.seed).to(args.device)
        names = list(trainable_parameters(model))
        norms = layerwise.norms_and_clipped_sum(model, nn.functional.cross_entropy, features, labels,
                                                lambda n: n)[1]
        clip = float(norms.median())  # half the examples clipped, half not

        def reference(sigma, method, physical):
            gradient, loss = engine.privatized_gradient(
                model, nn.functional.cross_entropy, features, labels, clip_norm=clip, noise_multiplier=sigma,
                expected_batch_size=batch, physical_batch_size=physical,
                noise_generator=make_generator(args.device, 17), method=method)
            return [gradient[n] for n in names], loss

        ref_sum, ref_loss = reference(0.0, "layerwise", batch)
        vmap_sum, _ = reference(0.0, "vmap", 32)
        ref_noisy, _ = reference(1.3, "layerwise", batch)
        probe = torch.randn(5, 3, 13, 11, device=args.device)
        unfold_error = max(relative_error([unfold(probe, k, p, s, d)], [functional.unfold(probe, k, d, p, s)])
                           for k, p, s, d in (((8, 8), (3, 3), (2, 2), (1, 1)), ((4, 3), (0, 1), (2, 1), (1, 2)),
                                              ((3, 3), (1, 0), (1, 3), (2, 1))))
        result = {"benchmark": "dpsgd_variant_check", "batch": batch, "clip_norm": round(clip, 5),
                  "unfold_vs_torch": unfold_error,
                  "physical_batch_size": CHECK_PHYSICAL, "clipped_examples": int((norms > clip).sum()),
                  "engine_vs_vmap": relative_error(ref_sum, vmap_sum), "variants": {}}
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        for name in ["engine"] + args.variants:
            flags = VARIANTS.get(name, {})
            cuda = torch.device(args.device).type == "cuda"
            try:
                for sigma, want, key in ((0.0, ref_sum, "clipped_sum"), (1.3, ref_noisy, "noisy")):
                    config = DPSGDConfig(clip_norm=clip, noise_multiplier=sigma,
                                         sampling_probability=batch / x.shape[0], physical_batch_size=CHECK_PHYSICAL)
                    trainer = Candidate(model, optimizer, x, y, config, device=args.device, **{**flags, "graph": False})
                    trainer.noise_generator = make_generator(args.device, 17)
                    if flags.get("graph"):  # the padded body: captured and replayed on cuda, run as it is on cpu
                        graphs = Graphs(trainer, 64)
                        padded = graphs.padded(batch + 1)  # at least one padding row, whose factor must be 0
                        static = {"index": torch.zeros(padded, dtype=torch.long, device=args.device),
                                  "size": torch.tensor(batch, device=args.device)}
                        static["index"][:batch] = index

                        def body():
                            totals, loss = graphs.body(static, update=False)
                            noises = [torch.randn(t.shape, generator=trainer.noise_generator, device=t.device)
                                      for t in totals]
                            return [(t + sigma * clip * n) / batch for t, n in zip(totals, noises)], loss

                        if cuda:
                            graph = torch.cuda.CUDAGraph()
                            graph.register_generator_state(trainer.noise_generator)
                            side = torch.cuda.Stream()
                            side.wait_stream(torch.cuda.current_stream())
                            with torch.cuda.stream(side):
                                graphs.body(static, update=False)
                            torch.cuda.current_stream().wait_stream(side)
                            with torch.cuda.graph(graph):
                                got, loss = body()
                            graph.replay()
                            torch.cuda.synchronize()
                            if sigma:  # graph-safe Philox draws other numbers than eager's: compare the noise's size
                                key = "noisy_graph_rng"
                        else:
                            got, loss = body()
                    else:
                        got, loss = trainer.noisy_gradient(features, labels)
                    error = relative_error(got, want) if key != "noisy_graph_rng" else \
                        abs(relative_error(got, ref_sum) / relative_error(want, ref_sum) - 1)
                    entry = result["variants"].setdefault(name, {})
                    entry[key] = error
                    entry["loss_relative_error"] = abs(float(loss) - ref_loss) / abs(ref_loss)
                    assert all(g.device.type == torch.device(args.device).type for g in got)
            except Exception as exc:  # noqa: BLE001
                result["variants"][name] = {"error": f"{type(exc).__name__}: {exc}"}
                traceback.print_exc()
        return result
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def passed(check_result: dict, name: str) -> bool:
    entry = check_result["variants"].get(name, {})
    if "error" in entry or not entry:
        return False
    limit = 1e-4
    exact = ("clipped_sum", "noisy", "loss_relative_error")
    return all(value < limit for key, value in entry.items() if key in exact) and entry.get("noisy_graph_rng", 0) < 0.05


# --- 2. profile ---------------------------------------------------------------------------------


def count_syncs(step, steps: int) -> float | None:
    if not torch.cuda.is_available():
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(steps):
                step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    synchronize("cuda")
    return sum("synchroniz" in str(w.message).lower() for w in caught) / steps


def _device_time(event) -> float:
    for attribute in ("self_device_time_total", "self_cuda_time_total"):
        value = getattr(event, attribute, None)
        if value is not None:
            return float(value)
    return 0.0


def profile(step, device, steps: int, tables: bool):
    """(kernels per step, kernel µs per step, top tables) of ``steps`` steps under torch.profiler."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.device(device).type == "cuda" else [])
    synchronize(device)
    with torch_profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        synchronize(device)
    kernels = [e for e in prof.events() if str(getattr(e, "device_type", "")).endswith("CUDA")]
    averages = prof.key_averages()
    text = ""
    if tables:
        for key in ("self_device_time_total", "self_cpu_time_total"):
            if key.startswith("self_device") and torch.device(device).type != "cuda":
                continue
            text += f"--- sorted by {key}\n" + averages.table(sort_by=key, row_limit=25) + "\n"
    top_cpu = sorted(((a.key, a.count / steps, a.self_cpu_time_total / steps) for a in averages),
                     key=lambda r: -r[2])[:12]
    top_device = sorted(((a.key, a.count / steps, _device_time(a) / steps) for a in averages),
                        key=lambda r: -r[2])[:12]
    ops = sum(a.count for a in averages if a.key.startswith("aten::")) / steps
    return {"kernels_per_step": len(kernels) / steps,
            "kernel_us_per_step": round(sum(_device_time(e) for e in kernels) / steps, 1),
            "aten_ops_per_step": ops,
            "top_self_cpu_us": [[k, round(c, 1), round(t, 1)] for k, c, t in top_cpu],
            "top_self_device_us": [[k, round(c, 1), round(t, 1)] for k, c, t in top_device if t > 0]}, text


def run_profile(x, y, args, made, batch, out: Path) -> dict:
    record = {"benchmark": "dpsgd_step_profile", "batch": batch, "device": torch.device(args.device).type,
              "runners": {}}
    for name, make in made.items():
        try:
            step = make(x, y, args, batch)
            for _ in range(args.warmup):
                step()
            synchronize(args.device)
            syncs = count_syncs(step, 3)
            host = []
            for _ in range(10):  # the host's time per call, without waiting for the device (unless the step does)
                started = time.perf_counter()
                step()
                host.append(1e3 * (time.perf_counter() - started))
            synchronize(args.device)
            summary, text = profile(step, args.device, args.profile_steps, tables=name == "engine")
            summary["syncs_per_step"] = syncs
            summary["host_ms_per_call"] = round(statistics.median(host), 3)
            record["runners"][name] = summary
            if text:
                with (out / "profile.txt").open("a") as f:
                    f.write(f"===== {name}, batch {batch}, {args.profile_steps} steps\n{text}\n")
        except Exception as exc:  # noqa: BLE001
            record["runners"][name] = {"error": f"{type(exc).__name__}: {exc}"}
            traceback.print_exc()
        log(f"profile {name} @ {batch}: {record['runners'][name].get('kernels_per_step')} kernels, "
            f"{record['runners'][name].get('kernel_us_per_step')} us of kernels, "
            f"{record['runners'][name].get('syncs_per_step')} syncs, "
            f"{record['runners'][name].get('host_ms_per_call')} ms of host per step")
    return record


# --- 3. timing ----------------------------------------------------------------------------------


def timed(step, args, steps: int) -> tuple[int, float]:
    for _ in range(args.warmup):
        step()
    synchronize(args.device)
    examples, started = 0, time.perf_counter()
    for _ in range(steps):
        examples += step()
    synchronize(args.device)
    return examples, time.perf_counter() - started


def run_timing(x, y, args, made, batch, deadline: float) -> dict:
    steps = args.steps if batch <= 1024 else max(5, args.steps * 3 // 5)
    rates = {name: [] for name in made}
    ms = {name: [] for name in made}
    made_steps = {}
    for name, make in made.items():  # built once: the graphs are captured once; fresh weights do not matter here
        try:
            made_steps[name] = make(x, y, args, batch)
        except Exception:  # noqa: BLE001
            traceback.print_exc()
    for round_ in range(args.rounds):
        if time.time() > deadline:
            log(f"timing @ {batch}: deadline, {round_} rounds")
            break
        for name, step in made_steps.items():
            try:
                examples, seconds = timed(step, args, steps)
            except Exception:  # noqa: BLE001
                traceback.print_exc()
                continue
            rates[name].append(examples / seconds)
            ms[name].append(1e3 * seconds / steps)
        log(f"round {round_ + 1} @ {batch}: " + ", ".join(f"{k} {v[-1]:.2f} ms" for k, v in ms.items() if v))
    median = {name: statistics.median(v) for name, v in rates.items() if v}
    base = median.get("non_private")
    paired = {}
    for name, values in rates.items():
        if name != "non_private" and values and rates.get("non_private"):
            paired[name] = round(statistics.median(n / o for n, o in zip(rates["non_private"], values)), 3)
    return {
        "benchmark": "dpsgd_step_variants", "device": torch.device(args.device).type, "expected_batch_size": batch,
        "physical_batch_size": args.physical, "steps_per_round": steps, "warmup_steps": args.warmup,
        "rounds": len(next(iter(ms.values()), [])), "noise_multiplier": SIGMA.get(batch, 1.0), "clip_norm": args.clip,
        "clock": "wall, between torch.cuda.synchronize()",
        "examples_per_s": {k: round(v, 1) for k, v in median.items()},
        "ms_per_step": {k: round(statistics.median(v), 3) for k, v in ms.items() if v},
        "overhead_vs_non_private": {k: round(base / v, 3) for k, v in median.items()} if base else {},
        "overhead_paired_by_round": paired,
        "rounds_ms_per_step": {k: [round(v, 3) for v in vs] for k, vs in ms.items()},
        "machine": machine(args.device),
    }


def machine(device) -> dict:
    info = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count()}
    if torch.device(device).type == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update({"gpu": props.name, "cuda": torch.version.cuda, "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                     "matmul_precision": torch.get_float32_matmul_precision()})
    return info


def main() -> None:
    global RESULTS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default="/tmp/dpsgd-overhead")
    parser.add_argument("--batches", type=int, nargs="+", default=[512, 4096])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--parts", nargs="+", default=["check", "profile", "time"],
                        choices=["check", "profile", "time"])
    parser.add_argument("--physical", type=int, default=8192)
    parser.add_argument("--steps", type=int, default=60, help="timed steps per round at batch ≤ 1024 (3/5 of it above)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--profile-steps", type=int, default=10)
    parser.add_argument("--check-batch", type=int, default=96)
    parser.add_argument("--bucket", type=int, default=0, help="graph padding (0: 64 up to batch 1024, else 128)")
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--clip", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="MNIST training examples (all by default)")
    parser.add_argument("--deadline", type=float, default=300, help="seconds: no timing round starts after it")
    parser.add_argument("--tiny", action="store_true", help="a few steps of everything (checks the script)")
    args = parser.parse_args()
    if args.tiny:
        args.batches, args.steps, args.rounds, args.warmup, args.profile_steps = [64, 256], 3, 2, 1, 2
        args.limit, args.check_batch = args.limit or 4000, 24
    started = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    RESULTS = out / "results.jsonl"
    train = load_mnist(MNIST, "train", args.limit)
    x = torch.from_numpy(train.features).to(args.device)
    y = torch.from_numpy(train.labels).to(args.device)
    log(f"{x.shape[0]} examples on {args.device}; {machine(args.device)}")
    made = runners(args)
    if "check" in args.parts:
        result = check(x, y, args)
        emit(result)
        failed = [name for name in list(made) if name not in ("engine", "non_private") and not passed(result, name)]
        for name in failed:
            log(f"{name}: failed the check, not timed")
            made.pop(name)
    for batch in args.batches:
        if "profile" in args.parts:
            emit(run_profile(x, y, args, made, batch, out))
    records = []
    for batch in args.batches:
        if "time" in args.parts:
            records.append(run_timing(x, y, args, made, batch, started + args.deadline))
            emit(records[-1])
    for record in records:  # the short table last: the device tool returns the end of the output
        overhead = record["overhead_vs_non_private"]
        print(f"batch {record['expected_batch_size']}: " + "; ".join(
            f"{k} {ms} ms {record['examples_per_s'][k]:.0f}/s x{overhead.get(k, '-')}"
            for k, ms in record["ms_per_step"].items()))
    log(f"done in {time.time() - started:.0f}s")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
