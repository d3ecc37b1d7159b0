"""What every model of the zoo must do, checked once for all of them: constructor arguments
that round-trip through get_config, weights that survive a .keras save, a one-line error from
fit(), and learning-rate defaults the trainer shares. A new model gets these checks by adding
an entry to NON_DEFAULT."""

import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo import defaults, registry

SHAPE = (6,)

# A value other than the constructor's default for every argument, so that an argument that
# get_config drops or from_config ignores shows.
NON_DEFAULT = {
    "ganem": dict(num_clusters=3, latent_dim=5, embedding_dim=2, generator_loss="nonsaturating", logit_clip=4.0,
                  e_batch_size=16, learn_prior=False, variant="authors-code", augment="none", architecture="mlp",
                  seed=3),
    "clustergan": dict(num_clusters=3, latent_dim=5, sigma=0.2, beta_n=0.5, beta_c=3.0, gp_weight=5.0, n_critic=2,
                       g_batch_size=16, zn_loss="mean", architecture="mlp", seed=3),
    "gmgan": dict(num_clusters=3, latent_dim=5, mean_range=2.0, sigma=0.5, latent="static", supervised=True,
                  e_batch_size=16, architecture="mlp", seed=3),
    "kmgan": dict(num_clusters=3, latent_dim=5, feature_dim=6, space="pixel", conditional=False, clip=0.1,
                  center_weight=0.5, regularizer_weight=0.2, temperature=2.0, center_memory=5.0, margin=0.5,
                  reassign_below=0.1, architecture="mlp", seed=3),
}
# Arguments whose default the non-default model keeps (none may be missing from NON_DEFAULT
# otherwise): GAN-EM's augmentation needs images.
KEPT_DEFAULT = {"ganem": {"augment"}}


def build(name):
    return registry.model_class(name)(SHAPE, **NON_DEFAULT[name])


def outputs(model, x):
    z = model.sample_latent(4, seed=1)
    return [model.cluster_probs(x).numpy(), model.embed(x).numpy(),
            model.generate(z, tf.constant([0, 1, 2, 0])).numpy()]


def test_every_registered_model_is_checked_here():
    assert set(NON_DEFAULT) == set(registry.MODELS)


@pytest.mark.parametrize("name", sorted(NON_DEFAULT))
def test_every_constructor_argument_round_trips_through_get_config(name):
    cls = registry.model_class(name)
    arguments = [p for p in inspect.signature(cls.__init__).parameters.values()
                 if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    given = NON_DEFAULT[name]
    for parameter in arguments:
        if parameter.name == "data_shape":
            continue
        assert parameter.name in given, f"{name}: no non-default value for {parameter.name}"
        if parameter.name not in KEPT_DEFAULT.get(name, ()):
            assert given[parameter.name] != parameter.default, f"{name}: {parameter.name} is its default"
    model = build(name)
    config = model.get_config()
    assert config["data_shape"] == list(SHAPE)
    for key, value in given.items():
        assert config[key] == value, f"{name}: get_config()[{key!r}] = {config[key]!r}, given {value!r}"
    clone = cls.from_config(config)
    assert clone.get_config() == config
    assert clone.count_params() == model.count_params()
    rebuilt = registry.build(registry.describe(model))
    assert type(rebuilt) is cls and rebuilt.get_config() == config


@pytest.mark.parametrize("name", sorted(NON_DEFAULT))
def test_a_keras_file_keeps_config_and_weights(name, tmp_path):
    model = build(name)
    x = tf.random.stateless_uniform((4, *SHAPE), seed=[1, 2])
    if name == "kmgan":
        model.init_centers(np.random.default_rng(0).uniform(size=(40, *SHAPE)).astype(np.float32))
    expected = outputs(model, x)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    assert type(loaded) is type(model) and loaded.get_config() == model.get_config()
    for want, got in zip(expected, outputs(loaded, x)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(NON_DEFAULT))
def test_fit_says_in_one_line_how_the_model_trains(name):
    model = build(name)
    model.compile()
    x = np.zeros((8, *SHAPE), np.float32)
    with pytest.raises(NotImplementedError) as error:
        model.fit(x, epochs=1, verbose=0)
    message = str(error.value)
    assert "\n" not in message and f"python -m trainers.{name}" in message
    for phase in model.phases:
        assert phase in message and callable(getattr(model, phase))
    with pytest.raises(NotImplementedError, match="does not train with fit"):
        model.train_step((x,))


@pytest.mark.parametrize("name", sorted(NON_DEFAULT))
def test_compile_without_optimizers_uses_the_trainers_learning_rates(name):
    from trainers import common

    model = build(name)
    model.compile()
    rates = defaults.LEARNING_RATES[name]
    for key, rate in rates.items():
        optimizer = getattr(model, f"{key}_optimizer")
        assert float(keras.ops.convert_to_numpy(optimizer.learning_rate)) == pytest.approx(rate)
    trainer = __import__(f"trainers.{name}", fromlist=["build_parser"])
    parser = trainer.build_parser()
    args = parser.parse_args([])
    common.fill_learning_rates(args, name)
    assert {key: getattr(args, f"lr_{key}") for key in rates} == rates
