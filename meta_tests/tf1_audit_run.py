"""The audit and the diff on models built with TensorFlow's TF1 layers, measured against what one real training step
does to them. Run as its own process (TF_USE_LEGACY_KERAS=1 must precede TensorFlow's import); prints one JSON object.

* a TF1 graph (tf.compat.v1.layers.batch_normalization): five layers, one per freeze situation: trainable and
  training; training a placeholder with a torch-style momentum; a layer object set to trainable=False after its call;
  trainable=False at build time; gamma and beta taken out of TRAINABLE_VARIABLES. One train op built the documented way (control_dependencies(UPDATE_OPS),
  minimize over TRAINABLE_VARIABLES) measures which statistics and scales move and the weight of the new statistic;
* the same audit with a momentum reader that takes the graph's constant for the weight of the new statistic (broken);
* the diff of that graph against a twin (MATCH) and against a twin with Keras' eps on one layer;
* a tf_keras model with the V1 Keras layer (tf.compat.v1.keras.layers.BatchNormalization), one frozen: fit() for one
  step measures what moves, and the frozen layer's training and inference outputs show what it normalizes with.
"""

import json
import random
import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bnsuite.audit import audit  # noqa: E402
from bnsuite.audit import read_tf1  # noqa: E402
from bnsuite.diff import diff  # noqa: E402
from meta_tests.audit_helpers import new_statistic_weight  # noqa: E402

v1 = tf.compat.v1
RNG = np.random.default_rng(0)
X = RNG.normal(1.0, 2.0, (8, 6, 6, 3)).astype(np.float32)


def graph_model(eps_d=1e-5):
    """(session, x, y, inputs of each BatchNorm by scope, the train op, the training predicate)."""
    g = tf.Graph()
    # The legacy layers' initializers take their seeds from Python's random module where none is given
    # (tf_keras/src/backend.py: random.randint(1, int(1e9)) without a seed generator), which the graph seed does not
    # fix: seeded here, so each run builds the same weights (the naive-eps diff's margin depended on the draw).
    random.seed(0)
    with g.as_default():
        v1.set_random_seed(0)
        x = v1.placeholder(tf.float32, [None, 6, 6, 3], name="x")
        is_training = v1.placeholder_with_default(False, (), name="is_training")
        ins = {}
        h = v1.layers.conv2d(x, 4, 3, padding="same", name="conv_a")
        ins["bn_a"] = h
        h = v1.layers.batch_normalization(h, training=True, epsilon=1e-5, name="bn_a")
        h = v1.layers.conv2d(h, 4, 3, padding="same", name="conv_b")
        ins["bn_b"] = h
        h = v1.layers.batch_normalization(h, training=is_training, momentum=0.1, epsilon=1e-5, name="bn_b")
        h = v1.layers.conv2d(h, 4, 3, padding="same", name="conv_c")
        ins["bn_c"] = h
        layer_c = v1.layers.BatchNormalization(epsilon=1e-5, name="bn_c")
        h = layer_c(h, training=True)
        layer_c.trainable = False  # after the call: the graph already holds its updates and trainable variables
        h = v1.layers.conv2d(h, 4, 3, padding="same", name="conv_d")
        ins["bn_d"] = h
        h = v1.layers.batch_normalization(h, training=True, trainable=False, epsilon=eps_d, name="bn_d")
        h = v1.layers.conv2d(h, 4, 3, padding="same", name="conv_e")
        ins["bn_e"] = h
        h = v1.layers.batch_normalization(h, training=True, epsilon=1e-5, name="bn_e")
        trainables = g.get_collection_ref(v1.GraphKeys.TRAINABLE_VARIABLES)
        for v in [v for v in trainables if v.op.name in ("bn_e/gamma", "bn_e/beta")]:
            trainables.remove(v)  # frozen for minimize()'s default var_list; its updates stay in UPDATE_OPS
        y = v1.layers.dense(tf.reduce_mean(h, axis=(1, 2)), 2, name="head")
        with tf.control_dependencies(v1.get_collection(v1.GraphKeys.UPDATE_OPS)):
            train = v1.train.GradientDescentOptimizer(0.5).minimize(tf.reduce_sum(y ** 2))
        sess = v1.Session(graph=g)
        sess.run(v1.global_variables_initializer())
    graph_model.keep.append(layer_c)  # the user's handle on the layer object lives as long as the session
    return sess, x, y, ins, train, is_training


graph_model.keep = []


def copy_weights(source, target):
    """Every variable of the source session's graph into the same-named one of the target (the port)."""
    src = {v.op.name: v for v in source.graph.get_collection(v1.GraphKeys.GLOBAL_VARIABLES)}
    values = source.run(src)
    with target.graph.as_default():
        for v in target.graph.get_collection(v1.GraphKeys.GLOBAL_VARIABLES):
            v.load(values[v.op.name], target)


def measure_step(sess, x, ins, train, is_training):
    """One train step: per layer, did the moving mean and gamma move, and the weight of the new batch mean."""
    variables = {v.op.name: v for v in sess.graph.get_collection(v1.GraphKeys.GLOBAL_VARIABLES)}
    var = lambda s, k: variables[f"{s}/{k}"]
    scopes = list(ins)
    before = sess.run({s: (var(s, "moving_mean"), var(s, "gamma")) for s in scopes})
    inputs = sess.run(ins, {x: X, is_training: True})
    sess.run(train, {x: X, is_training: True})
    after = sess.run({s: (var(s, "moving_mean"), var(s, "gamma")) for s in scopes})
    out = {}
    for s in scopes:
        (m0, g0), (m1, g1) = before[s], after[s]
        out[s] = {"stats_moved": bool(np.any(m1 != m0)), "gamma_moved": bool(np.any(g1 != g0)),
                  **new_statistic_weight(m0, m1, inputs[s])}
    return out


def facts(report):
    return {"layers": [l.facts() for l in report.layers], "warnings": [[w.layer, w.kind] for w in report.warnings]}


def tf1_graph():
    sess, x, y, ins, train, is_training = graph_model()
    report = audit(sess)
    twin = graph_model()
    naive = graph_model(eps_d=1e-3)
    copy_weights(sess, twin[0])
    copy_weights(sess, naive[0])
    diffs = {"twin": diff((sess, x, y), twin[:3], X), "naive_eps": diff((sess, x, y), naive[:3], X)}
    real = read_tf1.update_weight
    read_tf1.update_weight = lambda sess_, tensor, feed: 1.0 - real(sess_, tensor, feed)
    try:
        broken = audit(sess)
    finally:
        read_tf1.update_weight = real
    measured = measure_step(sess, x, ins, train, is_training)
    return {"audit": facts(report), "text": str(report), "broken_audit": facts(broken), "measured": measured,
            "diff": {k: {"matches": d.matches, "changes": [l.changes for l in d.layers], "text": str(d),
                         "out": [d.output_max_abs, d.output_tol]} for k, d in diffs.items()}}


def v1_keras():
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    BN = tf.compat.v1.keras.layers.BatchNormalization
    model = tf_keras.Sequential([
        tf_keras.Input((6, 6, 3)), tf_keras.layers.Conv2D(4, 3, padding="same"), BN(name="bn_frozen"),
        tf_keras.layers.Conv2D(4, 3, padding="same"), BN(name="bn_trained", momentum=0.1),
        tf_keras.layers.GlobalAveragePooling2D(), tf_keras.layers.Dense(2)])
    frozen = model.get_layer("bn_frozen")
    frozen.trainable = False
    report = audit(model)
    model.compile(optimizer=tf_keras.optimizers.SGD(0.5), loss="mse")
    read = lambda: {n: (model.get_layer(n).moving_mean.numpy().copy(), model.get_layer(n).gamma.numpy().copy())
                    for n in ("bn_frozen", "bn_trained")}
    before = read()
    model.fit(X, np.zeros((8, 2), np.float32), batch_size=8, epochs=1, verbose=0, shuffle=False)
    after = read()
    h = model.layers[0](X)
    measured = {n: {"stats_moved": bool(np.any(after[n][0] != before[n][0])),
                    "gamma_moved": bool(np.any(after[n][1] != before[n][1]))} for n in before}
    # What the frozen layer normalizes with in a training call: batch statistics differ from the moving ones.
    measured["bn_frozen"]["training_differs_from_inference"] = bool(
        np.max(np.abs(frozen(h, training=True).numpy() - frozen(h, training=False).numpy())) > 1e-3)
    return {"audit": facts(report), "text": str(report), "measured": measured}


if __name__ == "__main__":
    out = {"versions": {"tensorflow": tf.__version__}, "tf1_graph": tf1_graph(), "v1_keras": v1_keras()}
    sys.stdout.write("\nJSON " + json.dumps(out) + "\n")
