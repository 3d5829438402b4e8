"""The guard in a Lightning module: the ten-line recipe (manual optimisation, so the guard
decides whether the optimiser steps), on the exploding regression of torch_loop.py.

The recipe is the `training_step` below plus `on_train_end`:

    self.automatic_optimization = False          # in __init__, with self.guard = gradguard.Guard(...)
    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        loss = self.loss(batch)
        opt.zero_grad()
        self.manual_backward(loss)
        d = self.guard.step(self, loss)          # an nn.Module: named_parameters()
        if d.apply:
            opt.step()
        self.guard.after_update(self)
        if d.stop:
            self.trainer.should_stop = True
        return loss
    def on_train_end(self):
        self.guard.finish()

Run after `pip install ./crates/gradguard-python torch lightning`:

    python examples/python/lightning_recipe.py
"""

import os
import tempfile

import torch

import gradguard

try:
    import lightning as L
except ImportError:  # pragma: no cover - CI installs lightning
    raise SystemExit("this example needs Lightning: pip install lightning") from None


class Regression(L.LightningModule):
    def __init__(self, remedies, out_dir):
        super().__init__()
        self.automatic_optimization = False
        self.net = torch.nn.Sequential(torch.nn.Linear(20, 25), torch.nn.ReLU(), torch.nn.Linear(25, 1))
        self.guard = gradguard.Guard(remedies=remedies, out_dir=out_dir, quiet=True)
        self.summary = None

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        opt.zero_grad()
        self.manual_backward(loss)
        d = self.guard.step(self, loss)
        if d.apply:
            opt.step()
        self.guard.after_update(self)
        if d.stop:
            self.trainer.should_stop = True
        return loss

    def on_train_end(self):
        x, y = self.trainer.train_dataloader.dataset.tensors
        with torch.no_grad():
            final = float(torch.nn.functional.mse_loss(self.net(x), y))
        self.summary = self.guard.finish(final_loss=final, baseline_loss=float(y.var(unbiased=False)))


def run(remedies, out_dir):
    torch.manual_seed(1)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(512, 20, generator=gen)
    w = torch.rand(20, generator=gen) * 100 * (torch.rand(20, generator=gen) < 0.5)
    y = (x @ w + 0.1 * torch.randn(512, generator=gen))[:, None]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32,
                                         shuffle=True, generator=gen)
    model = Regression(remedies, out_dir)
    trainer = L.Trainer(max_steps=300, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, loader)
    return model.summary


if __name__ == "__main__":
    root = os.environ.get("GRADGUARD_EXAMPLE_OUT") or os.path.join(tempfile.gettempdir(), "runs", "lightning")
    plain = run(None, os.path.join(root, "plain"))
    clipped = run([{"kind": "clip_global_norm", "max_norm": 1.0}], os.path.join(root, "clipped"))
    for name, s in [("no remedy", plain), ("clip_global_norm", clipped)]:
        print(f"{name:>16}: {s['verdict']} after {s['steps']} steps, largest gradient norm "
              f"{s['max_grad_norm']:.3g}")
    assert plain["verdict"] == "exploding", plain
    assert clipped["verdict"] == "healthy", clipped
