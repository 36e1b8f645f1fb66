"""The stacked CNN's grouped convolutions as Triton implicit-GEMM kernels (``StackedCNN(convolutions="triton")``).

cuDNN runs some of the stack's grouped 3x3 convolutions group by group (21 launches per layer and step in the
H200 profile, ``benchmarks/results/nvidia-h200-profile.txt``). Here each convolution is one launch for all K
groups, as implicit matrix products that gather their operands straight from the channels-last activations
(no im2col copy):

* forward, per group g: out[(b, y, x), n] = sum over k = (dy, dx, c) of in[b, y + dy, x + dx, g C + c] w[(k), n];
* data gradient: the same kernel with the taps mirrored (in[b, y - dy, x - dx, ...], out of range = 0), on
  the output gradient and the weights transposed per group;
* weight gradient, per group: gw[n, k] = sum over (b, y, x) of gout[(b, y, x), g N + n] in[b, y + dy, x + dx, g C + c],
  the sum over positions split into slices whose partial sums are added by torch (deterministic, no atomics).

3x3 kernels, stride 1, no padding, as in the Byrd & Lipton CNN; CUDA (on the CPU only through Triton's
interpreter, ``TRITON_INTERPRET=1``, for the tests). ``python benchmarks/check_triton_conv.py --check`` compares
forward and gradients with ``F.conv2d`` in float64; ``--compile-only`` compiles the kernels of one training step
of the `none` stack for sm_90 without a GPU, as a launch specialises them, and reports their registers, spills
and shared memory (``ptxas -v``). Not the default (no GPU has measured it): ``convolutions="auto"`` (:meth:`StackedCNN.tune
<iwshift.models.StackedCNN.tune>`) times each layer through cuDNN and through these kernels before training
and keeps the faster, and ``benchmarks/profile_step.py`` times whole steps. Importing this module needs the
``triton`` package (it comes with PyTorch's CUDA wheels on Linux).
"""

# (no `from __future__ import annotations`: Triton 3.0's interpreter reads `tl.constexpr` annotations as objects)
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import triton
import triton.language as tl
from torch.nn import functional as F

TAPS = 3  # the kernels' height and width


@triton.jit(do_not_specialize=["B"])  # the batch (training, evaluation, a last partial one): one compilation
def _gather_conv(src, wmat, bias, out, B, Hs, Ws, Ho, Wo, C, N,
                 s_b, s_h, s_w, s_c, o_b, o_h, o_w, o_c,
                 SIGN: tl.constexpr, HAS_BIAS: tl.constexpr, IEEE: tl.constexpr, TAP_MAJOR: tl.constexpr,
                 BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    """out[b, y, x, g N + n] = (bias) + sum_k src[b, y + SIGN dy, x + SIGN dx, g C + c] wmat[g, k, n].
    ``TAP_MAJOR`` (C a multiple of BK): the taps in an outer loop, so that each row's address and bounds are
    computed once per tap rather than per element (by an instruction count, not a measurement, the per-element
    index arithmetic of the flat loop would cost more than the tile's tensor-core products)."""
    pid_m, pid_n, g = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    M, KD = B * Ho * Wo, 9 * C
    rm = pid_m * BM + tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    x = rm % Wo
    y = (rm // Wo) % Ho
    b = rm // (Wo * Ho)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    if TAP_MAJOR:
        for tap in range(9):
            sy = y + SIGN * (tap // 3)
            sx = x + SIGN * (tap % 3)
            rows = (rm < M) & (sy >= 0) & (sy < Hs) & (sx >= 0) & (sx < Ws)
            row_ptr = src + b * s_b + sy * s_h + sx * s_w + g * C * s_c
            for c0 in range(0, C, BK):
                c = c0 + tl.arange(0, BK)
                a = tl.load(row_ptr[:, None] + c[None, :] * s_c, mask=rows[:, None], other=0.0)
                w = tl.load(wmat + g * KD * N + (tap * C + c)[:, None] * N + rn[None, :], mask=rn[None, :] < N,
                            other=0.0)
                if IEEE:
                    acc += tl.dot(a, w, input_precision="ieee")
                else:
                    acc += tl.dot(a, w)
    else:
        for k0 in range(0, KD, BK):
            rk = k0 + tl.arange(0, BK)
            c = rk % C
            dy = rk // C // 3
            dx = (rk // C) % 3
            sy = y[:, None] + SIGN * dy[None, :]
            sx = x[:, None] + SIGN * dx[None, :]
            inside = (rm[:, None] < M) & (rk[None, :] < KD) & (sy >= 0) & (sy < Hs) & (sx >= 0) & (sx < Ws)
            a = tl.load(src + b[:, None] * s_b + sy * s_h + sx * s_w + (g * C + c[None, :]) * s_c, mask=inside,
                        other=0.0)
            w = tl.load(wmat + g * KD * N + rk[:, None] * N + rn[None, :],
                        mask=(rk[:, None] < KD) & (rn[None, :] < N), other=0.0)
            if IEEE:
                acc += tl.dot(a, w, input_precision="ieee")
            else:
                acc += tl.dot(a, w)
    if HAS_BIAS:
        acc += tl.load(bias + g * N + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
    tl.store(out + b[:, None] * o_b + y[:, None] * o_h + x[:, None] * o_w + (g * N + rn[None, :]) * o_c,
             acc.to(out.dtype.element_ty), mask=(rm[:, None] < M) & (rn[None, :] < N))


@triton.jit(do_not_specialize=["B"])  # the batch (training, evaluation, a last partial one): one compilation
def _weight_grad(src, gout, part, G, B, Ho, Wo, C, N, rows_per_split,
                 s_b, s_h, s_w, s_c, g_b, g_h, g_w, g_c,
                 IEEE: tl.constexpr, TAP_MAJOR: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, BM: tl.constexpr):
    """part[split, g, n, k] = sum over this split's output positions m of gout[m, g N + n] src[m + tap(k), g C + c].
    ``TAP_MAJOR`` (C a multiple of BK): this program's k lie in one tap, so a row's address is one number."""
    pid_n, pid_k, pid = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    g = pid % G
    split = pid // G
    M, KD = B * Ho * Wo, 9 * C
    rn = pid_n * BN + tl.arange(0, BN)
    rk = pid_k * BK + tl.arange(0, BK)
    c = rk % C
    dy = rk // C // 3
    dx = (rk // C) % 3
    tap = pid_k * BK // C
    acc = tl.zeros((BN, BK), dtype=tl.float32)
    for m0 in range(split * rows_per_split, tl.minimum((split + 1) * rows_per_split, M), BM):
        rm = m0 + tl.arange(0, BM)
        x = rm % Wo
        y = (rm // Wo) % Ho
        b = rm // (Wo * Ho)
        rows = (rm < M) & (rm < (split + 1) * rows_per_split)
        go = tl.load(gout + b[:, None] * g_b + y[:, None] * g_h + x[:, None] * g_w + (g * N + rn[None, :]) * g_c,
                     mask=rows[:, None] & (rn[None, :] < N), other=0.0)                        # (BM, BN)
        if TAP_MAJOR:
            row_ptr = src + b * s_b + (y + tap // 3) * s_h + (x + tap % 3) * s_w + g * C * s_c
            a = tl.load(row_ptr[:, None] + c[None, :] * s_c, mask=rows[:, None], other=0.0)  # (BM, BK)
        else:
            a = tl.load(src + b[:, None] * s_b + (y[:, None] + dy[None, :]) * s_h + (x[:, None] + dx[None, :]) * s_w
                        + (g * C + c[None, :]) * s_c, mask=rows[:, None] & (rk[None, :] < KD), other=0.0)
        if IEEE:
            acc += tl.dot(tl.trans(go), a, input_precision="ieee")
        else:
            acc += tl.dot(tl.trans(go), a)
    base = part + (split * G + g) * N * KD
    tl.store(base + rn[:, None] * KD + rk[None, :], acc, mask=(rn[:, None] < N) & (rk[None, :] < KD))


def _nhwc_strides(t: torch.Tensor) -> tuple[int, int, int, int]:
    """(batch, row, column, channel) strides of a (B, C, H, W) tensor, whatever its memory format."""
    return t.stride(0), t.stride(2), t.stride(3), t.stride(1)


def _width(n: int) -> int:
    """A tile's channel width: the channels rounded up to a power of two in 16..64 (at most 64, so that a
    128-channel layer runs as two tiles: more programs for its few positions)."""
    return 16 if n <= 16 else 32 if n <= 32 else 64


@dataclass(frozen=True)
class Launch:
    """One kernel launch: what the convolutions run, and what :func:`compile_for_hopper` compiles (the same
    plan, built from the same shapes and strides)."""

    kernel: Any
    grid: tuple[int, int, int]
    args: tuple  # tensors and ints, in the kernel's order
    constants: dict[str, Any]
    num_warps: int = 4

    def __call__(self) -> None:
        self.kernel[self.grid](*self.args, **self.constants, num_warps=self.num_warps)


def _gather_launch(src: torch.Tensor, wmat: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor,
                   groups: int, sign: int) -> Launch:
    B, GC, Hs, Ws = src.shape
    C, N = GC // groups, wmat.shape[2]
    _, _, Ho, Wo = out.shape
    # 128 positions per tile where a group has thousands of them, else 64 (more programs for the deep layers)
    BM, BN, BK = 128 if B * Ho * Wo >= 4096 else 64, _width(N), 32
    tap_major = C % BK == 0
    # the flat loop's per-element indices of a 128-row tile spill registers at 4 warps (``--compile-only``)
    num_warps = 8 if BM == 128 and not tap_major else 4
    return Launch(_gather_conv, (triton.cdiv(B * Ho * Wo, BM), triton.cdiv(N, BN), groups),
                  (src, wmat, bias if bias is not None else wmat, out, B, Hs, Ws, Ho, Wo, C, N,
                   *_nhwc_strides(src), *_nhwc_strides(out)),
                  dict(SIGN=sign, HAS_BIAS=bias is not None, IEEE=src.dtype == torch.float32, TAP_MAJOR=tap_major,
                       BM=BM, BN=BN, BK=BK), num_warps)


def _gather(src: torch.Tensor, wmat: torch.Tensor, bias: torch.Tensor | None, groups: int, out_hw: tuple[int, int],
            sign: int) -> torch.Tensor:
    out = torch.empty((src.shape[0], groups * wmat.shape[2], *out_hw), device=src.device, dtype=src.dtype,
                      memory_format=torch.channels_last)
    _gather_launch(src, wmat, bias, out, groups, sign)()
    return out


def _weight_gradient_launch(src: torch.Tensor, gout: torch.Tensor, groups: int) -> Launch:
    """The launch, its partial sums ``part`` (splits, G, N, 9 C) float32 being its third argument."""
    B, GC, _, _ = src.shape
    _, GN, Ho, Wo = gout.shape
    C, N = GC // groups, GN // groups
    KD, M = 9 * C, B * Ho * Wo
    BN, BK, BM = _width(N), 64, 64
    tiles = triton.cdiv(N, BN) * triton.cdiv(KD, BK) * groups
    processors = torch.cuda.get_device_properties(src.device).multi_processor_count if src.is_cuda else 132
    splits = max(1, min(triton.cdiv(M, 4 * BM), triton.cdiv(4 * processors, tiles)))  # about 4 waves of programs
    rows_per_split = triton.cdiv(triton.cdiv(M, splits), BM) * BM
    splits = triton.cdiv(M, rows_per_split)
    part = torch.empty((splits, groups, N, KD), device=src.device, dtype=torch.float32)
    return Launch(_weight_grad, (triton.cdiv(N, BN), triton.cdiv(KD, BK), groups * splits),
                  (src, gout, part, groups, B, Ho, Wo, C, N, rows_per_split, *_nhwc_strides(src),
                   *_nhwc_strides(gout)),
                  dict(IEEE=src.dtype == torch.float32, TAP_MAJOR=C % BK == 0, BN=BN, BK=BK, BM=BM))


def _weight_gradient(src: torch.Tensor, gout: torch.Tensor, groups: int) -> torch.Tensor:
    """(G N, C, 3, 3) float32."""
    launch = _weight_gradient_launch(src, gout, groups)
    launch()
    part, (_, GC, _, _), N = launch.args[2], src.shape, gout.shape[1] // groups
    C = GC // groups
    # part[..., k] with k = (dy, dx, c) is the (G N, C, dy, dx) weight gradient in channels-last memory: a
    # view, no copy (and no copy when autograd stores it for a channels-last weight, as training's are)
    total = part[0] if len(part) == 1 else part.sum(0)  # (one split: the deep layers' few positions)
    return total.view(groups * N, TAPS, TAPS, C).permute(0, 3, 1, 2)


def grouped_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, groups=groups)`` for 3x3 kernels, stride 1, no padding (autocast's dtype
    when autocast is on; the output channels-last), through the kernels above; differentiable."""
    if weight.shape[2:] != (TAPS, TAPS):
        raise ValueError(f"the Triton kernels take 3x3 convolutions (got {tuple(weight.shape[2:])})")
    return GroupedConv3x3.apply(x, weight, bias, groups)


class GroupedConv3x3(torch.autograd.Function):
    """The autograd function behind :func:`grouped_conv3x3`."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int) -> torch.Tensor:
        dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
        input_dtype = x.dtype  # autocast's cast happens in here: the gradients go back in the callers' dtypes
        # channels-last operands (a no-op on the stacked CNN's activations): the kernels' loads are then
        # contiguous along channels, and the launch is the one --compile-only compiles
        x, w = x.to(dtype).contiguous(memory_format=torch.channels_last), weight.to(dtype)
        GN, C = weight.shape[:2]
        N = GN // groups
        # forward operand: wmat[g, (dy, dx, c), n] = w[g N + n, c, dy, dx]
        wmat = w.view(groups, N, C, TAPS, TAPS).permute(0, 3, 4, 2, 1).reshape(groups, 9 * C, N).contiguous()
        out = _gather(x, wmat, bias.to(dtype), groups, (x.shape[2] - 2, x.shape[3] - 2), sign=1)
        ctx.save_for_backward(x, w)
        ctx.groups, ctx.input_dtype, ctx.weight_dtype = groups, input_dtype, weight.dtype
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, w = ctx.saved_tensors
        groups = ctx.groups
        grad_out = grad_out.to(x.dtype).contiguous(memory_format=torch.channels_last)
        GN, C = w.shape[:2]
        N = GN // groups
        grad_x = None
        if ctx.needs_input_grad[0]:
            # data operand: wmat[g, (dy, dx, n), c] = w[g N + n, c, dy, dx], taps mirrored
            wmat = w.view(groups, N, C, TAPS, TAPS).permute(0, 3, 4, 1, 2).reshape(groups, 9 * N, C).contiguous()
            grad_x = _gather(grad_out, wmat, None, groups, (x.shape[2], x.shape[3]), sign=-1).to(ctx.input_dtype)
        grad_w = _weight_gradient(x, grad_out, groups).to(ctx.weight_dtype)
        grad_b = grad_out.sum((0, 2, 3), dtype=torch.float32).to(ctx.weight_dtype)  # no float32 copy of grad_out
        return grad_x, grad_w, grad_b, None


def time_layer(weight: torch.Tensor, bias: torch.Tensor, groups: int, input_shape: tuple[int, int, int, int],
               dtype: torch.dtype, input_grad: bool = True, input_dtype: torch.dtype | None = None,
               channels_last: bool = True, replays: int = 20) -> dict[str, float]:
    """Milliseconds of GPU time per forward and backward of one grouped 3x3 convolution of ``weight`` through
    cuDNN (``torch``) and through the Triton kernels (``triton``), on random inputs of ``input_shape`` and
    ``input_dtype`` (default ``dtype``), channels-last or not as in training, under autocast to ``dtype``
    (``torch.float32``: none), the data gradient only with ``input_grad``. Each is captured as a CUDA graph
    (as the trainer's step is) and replayed: the host's launch time, which the captured step does not pay,
    is not counted.
    Where the Triton kernels fail (say, they do not compile for this GPU), their time is infinite and a
    warning says why. CUDA only."""
    device = weight.device
    # the input requires a gradient only where training's does (the kernels skip what nothing needs)
    x = torch.randn(input_shape, device=device, dtype=input_dtype or dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    leaves = [x.requires_grad_(input_grad), *(t.detach().clone().requires_grad_() for t in (weight, bias))]
    wanted = leaves if input_grad else leaves[1:]
    times = {}
    for name, conv in (("torch", lambda: F.conv2d(*leaves, groups=groups)),
                       ("triton", lambda: grouped_conv3x3(*leaves, groups))):
        def forward_backward() -> None:
            # (autocast's weight-cast cache off, as in the trainer's captured step)
            with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32, cache_enabled=False):
                out = conv()
            torch.autograd.grad(out, wanted, torch.ones_like(out))

        try:
            times[name] = _replayed_ms(forward_backward, device, replays)
        except Exception as err:  # noqa: BLE001  (cuDNN's failure is a real error; Triton's means: not here)
            if name == "torch":
                raise
            warnings.warn(f"the Triton convolutions failed ({type(err).__name__}: {str(err)[:200]}); "
                          f"cuDNN it is", stacklevel=2)
            times[name] = float("inf")
    return times


def _replayed_ms(work: Callable[[], None], device: torch.device, replays: int) -> float:
    """Milliseconds of GPU time per replay of ``work`` captured as a CUDA graph."""
    with torch.cuda.device(device):  # the capture's stream and the events on the weights' device
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # warm-up (compilation, cuDNN's benchmark) off the capture, as documented
            for _ in range(3):
                work()
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            work()
        graph.replay()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(replays):
            graph.replay()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / replays
