"""The CKA engine: pure maths on activations and Gram matrices (imports nothing of ckatlas).

Full batch: `linear_cka`, `rbf_cka`, `feature_space_linear_cka`, `cka_from_grams`.
Streaming: `MinibatchCKA`, the paper's minibatch estimator over all layer pairs.
Building blocks: `gram_linear`, `gram_rbf`, `center_gram`, `hsic_biased`, `hsic_unbiased`.
Other measures from the same Grams (`ckatlas.cka.measures`): RBF and debiased CKA, orthogonal
Procrustes, mutual k-NN, RSA and SVCCA; the registry `MEASURES` (`register_measure` adds one),
`accumulator`, `measure_matrix`.
Principal components from Grams: `top_components`, `explained_variance_ratio`,
`remove_top_components`.
"""

from ckatlas.cka._inputs import CKAInputError, as_features
from ckatlas.cka.components import explained_variance_ratio, remove_top_components, top_components
from ckatlas.cka.full import cka_from_grams, feature_space_linear_cka, linear_cka, rbf_cka
from ckatlas.cka.hsic import hsic_biased, hsic_unbiased
from ckatlas.cka.kernels import center_gram, centered_features, gram_linear, gram_rbf
from ckatlas.cka.measures import MEASURES, MeasureInfo, accumulator, measure_matrix, register_measure, unregister_measure
from ckatlas.cka.minibatch import MinibatchCKA

__all__ = [
    "CKAInputError",
    "MEASURES",
    "MeasureInfo",
    "register_measure",
    "unregister_measure",
    "accumulator",
    "measure_matrix",
    "MinibatchCKA",
    "as_features",
    "center_gram",
    "centered_features",
    "cka_from_grams",
    "feature_space_linear_cka",
    "gram_linear",
    "gram_rbf",
    "hsic_biased",
    "hsic_unbiased",
    "linear_cka",
    "explained_variance_ratio",
    "rbf_cka",
    "remove_top_components",
    "top_components",
]
