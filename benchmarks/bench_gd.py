"""Speed of dlncore's gradient descent against two baselines, measured in one process.

Run with ``.venv/bin/python benchmarks/bench_gd.py`` (about two minutes). BLAS and torch are
pinned to one thread before they are imported. Baselines:

- ``torch``: an eager PyTorch loop (bias-free ``nn.Linear`` layers, ``torch.optim.SGD``, full
  batch, float64, loss ``½‖Y − f(X)‖²``), when torch is installed;
- ``naive``: a numpy loop that backpropagates through the ``m`` samples.

Prints steps per second, the ratios, and GFLOP/s of a dlncore step next to a plain ``d × d``
matmul. ``dc.gd`` takes its compiled step for one chain of width ``≤ 32`` (the ``d = 10`` row;
``benchmarks/bench_step.py`` compares it with the numpy step). Not part of the test suite:
timings are not assertions.
"""

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import time  # noqa: E402

import numpy as np  # noqa: E402

import dlncore as dc  # noqa: E402

try:
    import torch  # noqa: E402

    torch.set_num_threads(1)
except ImportError:  # the torch baseline is optional
    torch = None


def rate(func, min_seconds: float = 1.5) -> float:
    """Calls of ``func(n)`` (which runs n steps) per second, best of three timed repeats."""
    n = 1
    while True:
        began = time.perf_counter()
        func(n)
        if time.perf_counter() - began > 0.2:
            break
        n *= 4
    n = max(1, int(n * min_seconds / 3 / (time.perf_counter() - began)))
    best = 0.0
    for _ in range(3):
        began = time.perf_counter()
        func(n)
        best = max(best, n / (time.perf_counter() - began))
    return best


def dlncore_steps(problem, weights, eta):
    return lambda n: dc.gd(problem, weights, eta, n, record=2)


def naive_steps(problem, weights, eta):
    X, Y = problem.X, problem.Y

    def run(n):
        ws = [w.copy() for w in weights]
        for _ in range(n):
            acts = [X]
            for w in ws:
                acts.append(w @ acts[-1])
            delta = acts[-1] - Y
            for j in reversed(range(len(ws))):
                grad = delta @ acts[j].T
                delta = ws[j].T @ delta
                ws[j] -= eta * grad

    return run


def torch_steps(problem, weights, eta):
    X = torch.tensor(problem.X.T)
    Y = torch.tensor(problem.Y.T)
    layers = []
    for w in weights:
        layer = torch.nn.Linear(w.shape[1], w.shape[0], bias=False, dtype=torch.float64)
        with torch.no_grad():
            layer.weight.copy_(torch.tensor(w))
        layers.append(layer)
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=eta)

    def run(n):
        for _ in range(n):
            opt.zero_grad()
            loss = 0.5 * ((model(X) - Y) ** 2).sum()
            loss.backward()
            opt.step()

    return run


def step_flops(dims):
    """Floating-point operations of the 3N − 2 products of one covariance-form GD step."""
    d0, n = dims[0], len(dims) - 1
    prefix = sum(2 * dims[j + 1] * dims[j] * d0 for j in range(1, n))
    return prefix + 2 * dims[-1] * d0 * d0 + 2 * prefix


def matmul_gflops(d):
    a, b = np.random.default_rng(0).standard_normal((2, d, d))
    return rate(lambda n: [a @ b for _ in range(n)]) * 2 * d**3 / 1e9


def compare(d, depth, m, eta=1e-3):
    problem = dc.synthetic_problem(d, d, m, d // 2, seed=0)
    dims = [d] * (depth + 1)
    weights = dc.init.gaussian(dims, 1 / np.sqrt(d), seed=1)
    ours = rate(dlncore_steps(problem, weights, eta))
    naive = rate(naive_steps(problem, weights, eta))
    torch_rate = rate(torch_steps(problem, weights, eta)) if torch else float("nan")
    gflops = ours * step_flops(dims) / 1e9
    print(
        f"d={d:4d} N={depth} m={m:6d} | dlncore {ours:10.0f}/s | naive {naive:9.0f}/s "
        f"({ours / naive:6.1f}x) | torch {torch_rate:9.0f}/s ({ours / torch_rate:6.1f}x) | "
        f"{gflops:6.2f} GFLOP/s (matmul {matmul_gflops(d):6.2f})"
    )


def batched(d=10, depth=3, m=100, batch=256, eta=1e-3):
    problem = dc.synthetic_problem(d, d, m, d // 2, seed=0)
    dims = [d] * (depth + 1)
    single = rate(dlncore_steps(problem, dc.init.gaussian(dims, 0.3, seed=1), eta))
    many = rate(dlncore_steps(problem, dc.init.gaussian(dims, 0.3, seed=1, batch=batch), eta))
    print(
        f"d={d} N={depth} batch={batch}: {many * batch:10.0f} trajectory-steps/s vs single "
        f"{single:8.0f}/s ({many * batch / single:.1f}x)"
    )


if __name__ == "__main__":
    print(f"numpy {np.__version__}, torch {torch.__version__ if torch else 'not installed'}")
    compare(10, 3, 100)
    for m in (200, 2000, 20000):
        compare(70, 5, m)
    compare(200, 3, 1000)
    batched()
