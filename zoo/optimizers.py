"""The zoo's optimizer: Keras' Adam with TensorFlow's fused update kernel.

Keras 3 writes Adam's update as about ten elementwise ops per variable, each a pass over
memory; for the 6.4 M-parameter dense layers of the conv trunks and generators that is a
large share of a CPU training step. TensorFlow's `ResourceApplyAdam` computes the same
update (bias-corrected step size, epsilon added to sqrt(v)) in one pass.
"""

import keras
import tensorflow as tf


def _handle(variable):
    """The resource handle of a Keras or TensorFlow variable (inside a strategy's update
    call: the one on the current device)."""
    if isinstance(variable, keras.Variable):
        variable = variable.value
    return variable.handle


@keras.saving.register_keras_serializable(package="zoo")
class Adam(keras.optimizers.Adam):
    """`keras.optimizers.Adam`, same arguments, state and checkpoints; dense updates run as
    one fused kernel (sparse gradients and AMSGrad take Keras' own path)."""

    def update_step(self, gradient, variable, learning_rate):
        if self.amsgrad or isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        local_step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        index = self._get_variable_index(variable)
        tf.raw_ops.ResourceApplyAdam(
            var=_handle(variable), m=_handle(self._momentums[index]), v=_handle(self._velocities[index]),
            beta1_power=tf.pow(beta_1, local_step), beta2_power=tf.pow(beta_2, local_step),
            lr=tf.cast(learning_rate, dtype), beta1=beta_1, beta2=beta_2, epsilon=tf.cast(self.epsilon, dtype),
            grad=tf.cast(gradient, dtype), use_locking=False)
