"""Small test models and checks shared by tests/test_structured_*.py."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

L = keras.layers


def randomize(model, seed=0):
    """Gives BN layers non-trivial statistics so that BN is not the identity."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, (L.BatchNormalization, L.LayerNormalization)):
            new = []
            for v in layer.weights:
                shape = tuple(v.shape)
                if v.name in ("gamma", "moving_variance"):
                    new.append(rng.uniform(0.5, 1.5, shape).astype("float32"))
                else:
                    new.append(rng.normal(0, 0.1, shape).astype("float32"))
            layer.set_weights(new)
        elif layer.weights and not isinstance(layer, keras.Model):
            new = []
            for v in layer.weights:
                w = keras.ops.convert_to_numpy(v)
                if v.name == "bias":
                    w = rng.normal(0, 0.1, w.shape).astype("float32")
                new.append(w)
            layer.set_weights(new)
    return model


def inputs_for(model, n=2, seed=1):
    rng = np.random.default_rng(seed)
    xs = []
    for t in model.inputs:
        shape = (n,) + tuple(t.shape[1:])
        if "int" in str(t.dtype):
            xs.append(rng.integers(0, 10, shape).astype("int32"))
        else:
            xs.append(rng.uniform(-1, 1, shape).astype("float32"))
    return xs if len(xs) > 1 else xs[0]


def snapshot(model):
    return (
        [np.array(w) for w in model.get_weights()],
        str(model.get_config()),
    )


def assert_same_snapshot(a, b):
    assert a[1] == b[1]
    assert len(a[0]) == len(b[0])
    for x, y in zip(a[0], b[0]):
        np.testing.assert_array_equal(x, y)


def check_equivalent(model, atol=1e-5, **kwargs):
    """Prunes; the thin model's outputs equal the masked model's. Returns both."""
    from kprune.structured import ChannelPruner

    before = snapshot(model)
    pruner = ChannelPruner(model, **kwargs)
    plan = pruner.plan()
    assert plan.num_removed > 0, plan.report()
    thin = pruner.prune()
    masked = pruner.masked_model()
    x = inputs_for(model)
    y_thin = keras.ops.convert_to_numpy(thin(x))
    y_masked = keras.ops.convert_to_numpy(masked(x))
    np.testing.assert_allclose(y_thin, y_masked, rtol=0, atol=atol)
    assert thin.count_params() < model.count_params()
    assert [l.name for l in thin.layers] == [l.name for l in model.layers]
    assert [type(l) for l in thin.layers] == [type(l) for l in model.layers]
    assert_same_snapshot(before, snapshot(model))
    return pruner, thin, x


def check_save_and_tflite(thin, x, tmp_path, atol=1e-4, static_batch=False):
    """Round-trips through .keras and runs the TFLite conversion.

    `static_batch=True` converts a concrete function of `x`'s shape (RNNs:
    the TFLite converter lowers their loops only with a static batch).
    """
    path = str(tmp_path / "thin.keras")
    thin.save(path)
    loaded = keras.saving.load_model(path)
    ref = keras.ops.convert_to_numpy(thin(x))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)), ref, rtol=0, atol=1e-6)
    if keras.backend.backend() != "tensorflow":
        # TFLite conversion needs TensorFlow: on JAX and torch the .keras
        # round trip is the check (the same models convert on TensorFlow).
        return
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    if static_batch:
        inp = keras.Input(batch_shape=x.shape, dtype=str(x.dtype))
        static = keras.Model(inp, thin(inp))
        flat = tf.lite.TFLiteConverter.from_keras_model(static).convert()
    else:
        flat = tf.lite.TFLiteConverter.from_keras_model(thin).convert()
    interp = Interpreter(model_content=flat)
    inp = interp.get_input_details()[0]
    interp.resize_tensor_input(inp["index"], x.shape)
    interp.allocate_tensors()
    interp.set_tensor(inp["index"], x)
    interp.invoke()
    out = interp.get_tensor(interp.get_output_details()[0]["index"])
    np.testing.assert_allclose(out, ref, rtol=0, atol=atol * max(1.0, float(np.abs(ref).max())))


# --- one small model per edge case -------------------------------------------


def sequential_cnn():
    return keras.Sequential([
        keras.Input((12, 12, 3)),
        L.Conv2D(8, 3, activation="relu", name="c1"),
        L.BatchNormalization(),
        L.MaxPooling2D(),
        L.Conv2D(12, 3, padding="same", name="c2"),
        L.ReLU(),
        L.Dropout(0.2),
        L.Flatten(),
        L.Dense(16, activation="relu", name="fc"),
        L.Dense(5, name="head"),
    ], name="seq_cnn")


def resnet_block_model():
    x = keras.Input((12, 12, 3))
    h = L.Conv2D(8, 3, padding="same", name="stem")(x)
    h = L.BatchNormalization(name="stem_bn")(h)
    s = L.ReLU(name="stem_relu")(h)
    # identity shortcut
    h = L.Conv2D(6, 3, padding="same", name="b1_c1")(s)
    h = L.BatchNormalization(name="b1_bn1")(h)
    h = L.ReLU()(h)
    h = L.Conv2D(8, 3, padding="same", name="b1_c2")(h)
    h = L.BatchNormalization(name="b1_bn2")(h)
    h = L.Add(name="b1_add")([h, s])
    s = L.ReLU()(h)
    # projection shortcut
    p = L.Conv2D(16, 1, strides=2, name="b2_proj")(s)
    p = L.BatchNormalization(name="b2_proj_bn")(p)
    h = L.Conv2D(10, 3, strides=2, padding="same", name="b2_c1")(s)
    h = L.ReLU()(h)
    h = L.Conv2D(16, 3, padding="same", name="b2_c2")(h)
    h = L.Add(name="b2_add")([h, p])
    h = L.ReLU()(h)
    h = L.GlobalAveragePooling2D()(h)
    out = L.Dense(4, name="head")(h)
    return keras.Model(x, out, name="mini_resnet")


def inception_model():
    x = keras.Input((10, 10, 4))
    h = L.Conv2D(8, 1, activation="relu", name="stem")(x)
    a = L.Conv2D(4, 1, name="br1")(h)
    b = L.Conv2D(6, 1, name="br2a")(h)
    b = L.Conv2D(5, 3, padding="same", name="br2b")(b)
    c = L.MaxPooling2D(3, strides=1, padding="same")(h)
    c = L.Conv2D(3, 1, name="br3")(c)
    h = L.Concatenate(name="cat")([a, b, c])
    h = L.BatchNormalization(name="cat_bn")(h)
    h = L.Activation("relu")(h)
    h = L.Conv2D(6, 3, name="after")(h)
    h = L.GlobalMaxPooling2D()(h)
    out = L.Dense(3, name="head")(h)
    return keras.Model(x, out, name="mini_inception")


def inverted_residual_model():
    x = keras.Input((12, 12, 3))
    h = L.Conv2D(8, 3, strides=2, padding="same", name="stem")(x)
    h = L.BatchNormalization(name="stem_bn")(h)
    s = L.ReLU(6.0)(h)

    def block(s, expand, out, name, residual):
        h = L.Conv2D(expand, 1, name=f"{name}_expand")(s)
        h = L.BatchNormalization(name=f"{name}_expand_bn")(h)
        h = L.ReLU(6.0)(h)
        h = L.DepthwiseConv2D(3, padding="same", name=f"{name}_dw")(h)
        h = L.BatchNormalization(name=f"{name}_dw_bn")(h)
        h = L.ReLU(6.0)(h)
        h = L.Conv2D(out, 1, name=f"{name}_project")(h)
        h = L.BatchNormalization(name=f"{name}_project_bn")(h)
        return L.Add(name=f"{name}_add")([s, h]) if residual else h

    h = block(s, 24, 8, "b1", True)
    h = block(h, 24, 8, "b2", True)
    h = block(h, 32, 12, "b3", False)
    h = L.Conv2D(32, 1, name="last")(h)
    h = L.ReLU(6.0)(h)
    h = L.GlobalAveragePooling2D()(h)
    out = L.Dense(4, activation="softmax", name="head")(h)
    return keras.Model(x, out, name="mini_mobilenet")


def check_approximate(model, **kwargs):
    """Prunes a model whose plan has approximate groups: prune() verifies the
    exact part, and the plan and report name the approximate groups."""
    from kprune.structured import ChannelPruner

    before = snapshot(model)
    pruner = ChannelPruner(model, **kwargs)
    plan = pruner.plan()
    assert plan.approximate, plan.report()
    assert "Approximate groups" in pruner.report()
    thin = pruner.prune()  # verify=True: raises if the exact groups differ
    assert pruner.verified_difference is not None and pruner.verified_difference <= 1e-4
    assert thin.count_params() < model.count_params()
    assert_same_snapshot(before, snapshot(model))
    return pruner, thin, inputs_for(model)


# --- edge cases of issue 10 ---------------------------------------------------


def ops_model():
    """keras.ops nodes: hard-swish written with + 3 and * (1/6), a binary op
    between two tensors, a mean over space and a scalar subtraction."""
    x = keras.Input((8, 8, 3))
    h = L.Conv2D(8, 3, padding="same", name="c1")(x)
    h = h * (L.ReLU(6.0)(h + 3.0) * (1.0 / 6.0))
    g = L.Conv2D(8, 1, name="c2")(h)
    h = keras.ops.add(h, g) - 0.5
    s = keras.ops.mean(h, axis=(1, 2), keepdims=True)
    h = h * keras.ops.sigmoid(s)
    h = L.Conv2D(6, 1, name="c3")(h)
    out = L.Dense(3, name="head")(L.GlobalAveragePooling2D()(h))
    return keras.Model(x, out, name="ops_model")


def se_block_model():
    """EfficientNet's squeeze-excite: GAP -> Reshape((1, 1, C)) -> conv -> conv -> *."""
    x = keras.Input((8, 8, 3))
    h = L.Conv2D(16, 3, padding="same", activation="swish", name="expand")(x)
    s = L.GlobalAveragePooling2D(name="se_squeeze")(h)
    s = L.Reshape((1, 1, 16), name="se_reshape")(s)
    s = L.Conv2D(4, 1, activation="swish", name="se_reduce")(s)
    s = L.Conv2D(16, 1, activation="sigmoid", name="se_expand")(s)
    h = L.multiply([h, s], name="se_excite")
    h = L.Conv2D(8, 1, name="project")(h)
    out = L.Dense(3, name="head")(L.Flatten()(h))
    return keras.Model(x, out, name="se_block")


def token_reshape_model():
    """[N, H, W, C] -> [N, H*W, C] tokens, a Permute that keeps the channels
    last, and an ops.reshape back."""
    x = keras.Input((4, 4, 3))
    h = L.Conv2D(8, 2, strides=2, name="patch")(x)
    h = L.Reshape((4, 8), name="tokens")(h)
    h = L.Dense(12, activation="relu", name="mlp")(h)
    h = L.Permute((1, 2), name="keep_last")(h)
    h = keras.ops.reshape(h, (-1, 2, 2, 12))
    h = L.Conv2D(6, 1, name="after")(h)
    out = L.Dense(3, name="head")(L.Flatten()(h))
    return keras.Model(x, out, name="token_reshape")


def grouped_conv_model():
    """Conv2D(groups=2) (whole groups go) and Conv2D(groups=C) (a depthwise conv)."""
    x = keras.Input((8, 8, 3))
    h = L.Conv2D(8, 1, name="a")(x)
    h = L.Conv2D(8, 3, padding="same", groups=4, name="grouped")(h)
    h = L.ReLU()(h)
    h = L.Conv2D(12, 1, name="b")(h)
    h = L.Conv2D(12, 3, padding="same", groups=12, name="dw_as_grouped")(h)
    h = L.Conv2D(6, 1, name="c")(h)
    out = L.Dense(3, name="head")(L.GlobalAveragePooling2D()(h))
    return keras.Model(x, out, name="grouped_conv")


def vit_encoder(dim=16, heads=4, mlp=32, depth=2):
    """A ViT-style pre-LN encoder from keras.layers: patches, MHA, MLP."""
    x = keras.Input((8, 8, 3))
    h = L.Conv2D(dim, 4, strides=4, name="patch")(x)
    h = L.Reshape((4, dim), name="tokens")(h)
    for i in range(depth):
        a = L.LayerNormalization(name=f"ln{i}a")(h)
        a = L.MultiHeadAttention(heads, dim // heads, name=f"mha{i}")(a, a)
        h = L.Add(name=f"res{i}a")([h, a])
        m = L.LayerNormalization(name=f"ln{i}b")(h)
        m = L.Dense(mlp, activation="gelu", name=f"mlp{i}_up")(m)
        m = L.Dense(dim, name=f"mlp{i}_down")(m)
        h = L.Add(name=f"res{i}b")([h, m])
    h = L.LayerNormalization(name="ln_final")(h)
    h = L.GlobalAveragePooling1D()(h)
    out = L.Dense(3, name="head")(h)
    return keras.Model(x, out, name="vit")


def bert_encoder(vocab=20, seq=6, dim=16, heads=4, mlp=32):
    """A BERT-style post-LN encoder: token + segment embeddings, MHA, MLP."""
    tok = keras.Input((seq,), dtype="int32", name="tokens")
    seg = keras.Input((seq,), dtype="int32", name="segments")
    h = L.Add(name="embed")([L.Embedding(vocab, dim, name="tok_emb")(tok),
                             L.Embedding(10, dim, name="seg_emb")(seg)])
    h = L.LayerNormalization(name="emb_ln")(h)
    a = L.MultiHeadAttention(heads, dim // heads, name="mha")(h, h)
    h = L.LayerNormalization(name="ln1")(L.Add()([h, a]))
    m = L.Dense(mlp, activation="gelu", name="mlp_up")(h)
    m = L.Dense(dim, name="mlp_down")(m)
    h = L.LayerNormalization(name="ln2")(L.Add()([h, m]))
    cls = h[:, 0]
    out = L.Dense(2, name="head")(cls)
    return keras.Model([tok, seg], out, name="bert")


def rnn_text_model():
    """Embedding -> LSTM -> Bidirectional(GRU) -> SimpleRNN -> head."""
    x = keras.Input((7,), dtype="int32")
    h = L.Embedding(30, 8, name="emb")(x)
    h = L.LSTM(12, return_sequences=True, name="lstm")(h)
    h = L.Bidirectional(L.GRU(6, return_sequences=True), name="bigru")(h)
    h = L.SimpleRNN(10, name="srnn")(h)
    out = L.Dense(3, name="head")(h)
    return keras.Model(x, out, name="rnn_text")


def layernorm_mlp():
    """Dense -> LayerNormalization -> Dense: an approximate group."""
    x = keras.Input((6,))
    h = L.Dense(16, name="a")(x)
    h = L.LayerNormalization(name="ln")(h)
    h = L.Dense(8, activation="relu", name="b")(h)
    return keras.Model(x, L.Dense(2, name="head")(h), name="ln_mlp")


def group_norm_model():
    x = keras.Input((6, 6, 3))
    h = L.Conv2D(8, 3, name="a")(x)
    h = L.GroupNormalization(groups=4, name="gn")(h)
    h = L.Conv2D(6, 1, name="b")(h)
    return keras.Model(x, L.Dense(2, name="head")(L.Flatten()(h)), name="gn_model")


def lambda_model():
    x = keras.Input((6, 6, 3))
    h = L.Conv2D(8, 3, name="a")(x)
    h = L.Lambda(lambda t: t * 2.0, name="double")(h)
    h = L.Conv2D(6, 1, name="b")(h)
    return keras.Model(x, L.Dense(2, name="head")(L.Flatten()(h)), name="lambda_model")
