"""Your own models, as hepprune takes them: builders, a custom prunable layer.

A builder is ``function(input_shape, n_outputs)`` returning an *uncompiled*
tf_keras model with one input and one output: ``n_outputs`` is 1 for
regression and the number of classes for classification (end with a
softmax then). Point the config at it::

    model: {builder: "examples.user_model.models:two_branch"}

Build with ``tf_keras`` (Keras 2), never ``keras`` (Keras 3): tfmot prunes
only Keras 2 models. Importing it through ``data.backend`` also sets
``TF_USE_LEGACY_KERAS=1`` in time.
"""

from hepprune.core.backend import keras, tfmot


def _head(x, n_outputs):
    out = keras.layers.Dense(n_outputs, name="output")(x)
    return keras.layers.Activation("softmax", name="softmax")(out) if n_outputs > 1 else out


def two_branch(input_shape, n_outputs):
    """A functional model whose input feeds two branches, joined before the output."""
    inputs = keras.Input(shape=input_shape, name="inputs")
    a = keras.layers.Dense(16, activation="relu", name="wide")(inputs)
    b = keras.layers.Dense(8, activation="tanh", name="narrow")(inputs)
    joined = keras.layers.Concatenate(name="join")([a, b])
    hidden = keras.layers.Dense(16, activation="relu", name="mix")(joined)
    return keras.Model(inputs, _head(hidden, n_outputs), name="two_branch")


def small_cnn(input_shape, n_outputs):
    """A small CNN for image inputs (N x H x W x C)."""
    return keras.Sequential([
        keras.Input(shape=input_shape, name="inputs"),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1"),
        keras.layers.MaxPooling2D(2, name="pool1"),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2"),
        keras.layers.MaxPooling2D(2, name="pool2"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(32, activation="relu", name="fc1"),
        keras.layers.Dense(n_outputs, name="output"),
        *([keras.layers.Activation("softmax", name="softmax")] if n_outputs > 1 else []),
    ], name="small_cnn")


class ScaledDense(keras.layers.Layer, tfmot.sparsity.keras.PrunableLayer):
    """A dense layer with a learned per-unit output scale.

    Implementing tfmot's ``PrunableLayer`` (``get_prunable_weights``) is what
    lets hepprune prune it like a built-in Dense: here the kernel is pruned,
    the scale is not. ``get_config`` lets it be saved and loaded; list it in
    ``model.custom_objects`` as ``examples.user_model.models:ScaledDense``.
    """

    def __init__(self, units, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.activation = keras.activations.get(activation)

    def build(self, input_shape):
        self.kernel = self.add_weight("kernel", shape=(int(input_shape[-1]), self.units),
                                      initializer="glorot_uniform")
        self.scale = self.add_weight("scale", shape=(self.units,), initializer="ones")
        self.bias = self.add_weight("bias", shape=(self.units,), initializer="zeros")
        super().build(input_shape)

    def call(self, inputs):
        return self.activation(keras.backend.dot(inputs, self.kernel) * self.scale + self.bias)

    def get_prunable_weights(self):
        return [self.kernel]

    def get_config(self):
        return {**super().get_config(), "units": self.units,
                "activation": keras.activations.serialize(self.activation)}


class FeatureScale(keras.layers.Layer):
    """A custom layer with weights but no ``get_prunable_weights``: tfmot cannot
    prune it, so hepprune leaves it dense and says so."""

    def build(self, input_shape):
        self.scale = self.add_weight("scale", shape=(int(input_shape[-1]),), initializer="ones")
        super().build(input_shape)

    def call(self, inputs):
        return inputs * self.scale


def with_custom_layer(input_shape, n_outputs):
    """A Sequential model with a custom prunable layer and a custom unprunable
    one (hls4ml converts neither: its export names the first)."""
    return keras.Sequential([
        keras.Input(shape=input_shape, name="inputs"),
        FeatureScale(name="feature_scale"),
        ScaledDense(32, activation="relu", name="scaled"),
        keras.layers.Dense(16, activation="relu", name="fc"),
        keras.layers.Dense(n_outputs, name="output"),
    ], name="with_custom_layer")


class Subclassed(keras.Model):
    """What hepprune refuses: tfmot cannot see inside a subclassed model's call()."""

    def __init__(self, n_outputs):
        super().__init__()
        self.hidden = keras.layers.Dense(16, activation="relu")
        self.out = keras.layers.Dense(n_outputs)

    def call(self, inputs):
        return self.out(self.hidden(inputs))


def subclassed(input_shape, n_outputs):
    model = Subclassed(n_outputs)
    model.build((None, *input_shape))
    return model
