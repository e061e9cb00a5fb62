"""SOAP: Adam run in the eigenbasis of Shampoo's preconditioner (Vyas et al., "SOAP:
Improving and Stabilizing Shampoo using Adam", arXiv 2409.11321), the optimizer Cool-chic
5.0 trains with. A training phase selects it with ``Phase(optimizer="soap")``.

For a weight matrix W (out, in) with gradient G, the optimizer keeps running averages of
G G^T (out x out) and G^T G (in x in) and, every `PRECONDITION_EVERY` steps, their
eigenvectors Q_L and Q_R. Each step, Adam's second moment is accumulated on the rotated
gradient Q_L^T G Q_R, so that its per-coordinate scaling acts along the curvature's
principal directions instead of the weights' own axes; the update is rotated back. With
identity bases this is Adam exactly. Our decoders' matrices are small (at most 24 x 27),
so each eigendecomposition is exact (`torch.linalg.eigh`) and costs microseconds.

Parameters of one dimension (biases), and groups marked ``precondition=False`` (the latent
grids: a 768 x 512 grid would need 768 x 768 statistics), get plain Adam. A convolution's
(out, in, kh, kw) weights are preconditioned as the (out, in * kh * kw) matrix.
"""

from __future__ import annotations

import math

import torch

SHAMPOO_BETA = 0.95  # decay of the G G^T and G^T G averages (the paper's default: beta2 of 0.95)
PRECONDITION_EVERY = 10  # steps between eigendecompositions (the paper's default)


class Soap(torch.optim.Optimizer):
    """SOAP over param groups with ``lr`` (and optionally ``precondition``) as torch's Adam
    takes them; betas and eps as Adam's defaults."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, shampoo_beta: float = SHAMPOO_BETA,
                 precondition_every: int = PRECONDITION_EVERY):
        if lr < 0 or eps <= 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1 and 0 <= shampoo_beta < 1):
            raise ValueError("invalid SOAP hyperparameters")
        if precondition_every < 1:
            raise ValueError("precondition_every must be >= 1")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, shampoo_beta=shampoo_beta,
                                      precondition_every=precondition_every, precondition=True))

    @staticmethod
    def _matrix(p: torch.Tensor) -> bool:
        return p.dim() >= 2 and p.shape[0] > 1 and p[0].numel() > 1

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                rotate = group["precondition"] and self._matrix(p)
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float64)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                    if rotate:
                        m, n = p.shape[0], p[0].numel()
                        state["left"] = torch.zeros(m, m, dtype=p.dtype, device=p.device)
                        state["right"] = torch.zeros(n, n, dtype=p.dtype, device=p.device)
                        state["q_left"] = torch.eye(m, dtype=p.dtype, device=p.device)
                        state["q_right"] = torch.eye(n, dtype=p.dtype, device=p.device)
                state["step"] += 1
                t = int(state["step"])
                g = p.grad
                state["exp_avg"].lerp_(g, 1.0 - beta1)
                if rotate:
                    g2 = g.reshape(p.shape[0], -1)
                    left, right = state["left"], state["right"]
                    left.mul_(group["shampoo_beta"]).add_(g2 @ g2.T, alpha=1.0 - group["shampoo_beta"])
                    right.mul_(group["shampoo_beta"]).add_(g2.T @ g2, alpha=1.0 - group["shampoo_beta"])
                    if t == 1 or t % group["precondition_every"] == 0:
                        state["q_left"] = torch.linalg.eigh(left)[1]
                        state["q_right"] = torch.linalg.eigh(right)[1]
                    ql, qr = state["q_left"], state["q_right"]
                    g_rot = ql.T @ g2 @ qr
                    m_rot = ql.T @ state["exp_avg"].reshape(g2.shape) @ qr
                    v = state["exp_avg_sq"].view(g2.shape)
                    v.mul_(beta2).addcmul_(g_rot, g_rot, value=1.0 - beta2)
                else:
                    m_rot, v = state["exp_avg"], state["exp_avg_sq"]
                    v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
                bc1 = 1.0 - beta1 ** t
                bc2 = 1.0 - beta2 ** t
                direction = m_rot / (v.sqrt() / math.sqrt(bc2) + group["eps"])
                if rotate:
                    direction = (state["q_left"] @ direction @ state["q_right"].T).reshape(p.shape)
                p.add_(direction, alpha=-group["lr"] / bc1)
        return loss
