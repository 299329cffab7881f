"""The one home of numerical tolerances. Tests ask these functions (``from bnsuite.suites import tolerances as tl``);
they never invent numbers. One module per area: ``core`` (one BatchNorm layer, and the helpers every bound builds on),
``network`` (whole networks), ``areas`` (norms, blocks, replicas, mixed precision); each imports from ``core`` only
what it builds on, and this package names them all. A new area adds a module ``bnsuite/suites/tolerances_<area>.py``
(see docs/adding-a-lane.md).

Reasoning
---------
Let u be the unit roundoff of a dtype (2^-24 for float32). BatchNorm reduces n values per channel. We use the
classical worst-case bound for a recursive sum of n terms, |computed - exact| <= gamma_n * sum|x_i| with
gamma_n ~ n*u (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., section 4.2). Frameworks use pairwise
or blocked reductions whose errors are far smaller, so the bound is safe (tests never flake on a seed) while staying
orders of magnitude below every semantic difference this suite distinguishes: the smallest one is the Bessel factor
n/(n-1), a relative change of 1/(n-1) in the variance (about 1e-2 for our n ~ 100, against ~1e-5 for the float32
bound below). ``assert_separable`` checks that margin wherever a test classifies a behaviour.

* batch mean:      |dmu|      <= (n + 2) u_s max|x|
* batch variance:  |dvar|/var <= (n + 4) u_s kappa, kappa = 1 + max(mu^2 / var). The factor kappa covers frameworks
  that use the one-pass formula E[x^2] - E[x]^2 (Flax's default use_fast_variance, Keras' torch backend), whose error
  grows with mean^2/var (catastrophic cancellation); two-pass implementations have kappa effectively 1.
* normalized output y = (x - mu) / sqrt(var + eps) * gamma + beta:
      |dy| <= |gamma| (|dmu| / sigma + |xhat| |dvar| / (2 var)) + 4 u_o max|y|
  where u_s is the roundoff of the dtype the statistics are computed in and u_o that of the output dtype.
* running statistics after k steps: each step adds the batch-statistic error above plus 2 u_s for the
  exponential-moving-average arithmetic, so errors add linearly in k (the EMA weights sum to at most 1).
* depth d (stacked layers): errors compound at most linearly in d for normalized activations, so bounds scale by d.
"""

from bnsuite.suites.tolerances.core import (BATCH_DEPENDENCE_EFFECT, MODE_CLASSIFICATION_FLOOR, STAT_Z, Tol,
                                            UNIT_ROUNDOFF, assert_separable, batch_var_rel, bn_backward, bn_output,
                                            conditioning, degenerate_output, difference_of_outputs, exact,
                                            hyperparameter_round_trip, inference_invariance, mode_classification,
                                            momentum_weight, pooled_statistics_tol, roundoff, running_stats,
                                            two_results_of_one_exact_value)
from bnsuite.suites.tolerances.network import (NetTrainingBounds, net_backward_rel, net_forward_rel, net_output,
                                               net_output_linear_in_depth, net_same_network_two_batch_sizes)
from bnsuite.suites.tolerances.areas import (SAMPLING_Z, bce_loss, dense_output, elementwise, keep_fraction,
                                             mixed_running_stats, norm_batch_independence,
                                             norm_classification_margin, norm_output, replica_backward,
                                             replica_output, replica_running_stats, sampled, sgd_recovered_gradient,
                                             softmax_output)
