"""Taps on named modules of any `nn.Module`: Grams computed inside forward hooks.

The package: `layers` (which modules), `calls` (which tensor, which input), `taps` (the
hooks, and activations kept whole), `gram_taps` (Grams inside the hooks; the products
themselves are `ckatlas.cka.products`).

Which modules (`resolve_layers`): a layer spec is "blocks", "all", a module name,
a glob pattern, a module class, or a list mixing them.

* "blocks" / "all" call `model.layer_names(kind)` when the model has it (the
  ckatlas families do). For other models "all" means every leaf module whose
  output holds a tensor with the batch as first dimension, except modules that
  return their input unchanged in eval mode (Dropout, Identity: their CKA with
  the layer before is 1 and would show as a spurious block) and modules called
  more than once per forward (left out with a warning); "blocks" is an error that
  suggests a glob for the model's longest `ModuleList`/`Sequential`.
* Glob patterns match dotted names part by part: ``*`` is any text inside one
  part, ``**`` any number of parts (``stage3.*.add``, ``encoder.layer.*``, ``**.relu``).
* A class selects every submodule that is an instance of it.
* Order: names from `layer_names` and lists of plain names keep their order; a
  spec with a glob, a class or the generic "all" is put in forward order (the
  order in which the modules are first called).

Which tensor (`pick_tensor`): a Tensor output as is; a dict or a Hugging Face
`ModelOutput`: its ``last_hidden_state`` if present, else its first Tensor
value; a tuple or list: its first Tensor element (searched depth first).

Which input (`call_model`): a Tensor batch is passed as ``model(x)``; a dict (or a
tokenizer's ``BatchEncoding``) as ``model(**batch)``; a tuple or list (e.g.
``(images, labels)`` from a DataLoader) passes only its first element. NumPy arrays
become tensors, and floating-point inputs take the dtype of the model's floating
parameters (float64 arrays into a float32 model); integer inputs (token ids) are
left alone.

Token sequences (transformers): a 3-D output ``(n, seq, d)`` becomes one
representation per example as `tokens` says ("auto", "flatten", "mean", "first",
"last"), with the batch's ``attention_mask`` honoured; see `ckatlas.capture.tokens`.

Compiled models: a ``torch.compile`` model is measured through the module it wraps
(``_orig_mod``), run eagerly: hooks need every tapped layer's output, which a
compiled graph does not hand out, and the result equals the plain model's. Layer
names may be given with or without the ``_orig_mod.`` prefix.

Every tapped module must run exactly once per forward pass; a second call in one
pass is an error naming it.
"""


from ckatlas.capture.calls import as_tensor, batch_inputs, batch_len, call_model, inference, model_device, pick_tensor
from ckatlas.capture.gram_taps import GramTaps
from ckatlas.capture.layers import LAYER_KINDS, LayerSpec, resolve_layers, uncompiled
from ckatlas.capture.taps import ActivationTaps, capture_activations

__all__ = [
    "ActivationTaps",
    "GramTaps",
    "LAYER_KINDS",
    "LayerSpec",
    "as_tensor",
    "batch_inputs",
    "batch_len",
    "call_model",
    "capture_activations",
    "inference",
    "model_device",
    "pick_tensor",
    "resolve_layers",
    "uncompiled",
]
