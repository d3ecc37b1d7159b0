"""What every model of the zoo must do, checked once for all of them: constructor arguments
that round-trip through get_config, weights that survive a .keras save, a one-line error from
fit(), learning-rate defaults the trainer shares, two replicas that train as one, and exported
signatures that compute what the model does. A new model gets these checks by adding an entry
to NON_DEFAULT and REPLICATED (tests/test_own_data.py runs every trainer's command line)."""

import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo import registry

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
    from trainers import driver

    model = build(name)
    model.compile()
    config_class = driver.task_of(name).config_class
    rates = config_class.learning_rates()
    for key, rate in rates.items():
        optimizer = getattr(model, f"{key}_optimizer")
        assert float(keras.ops.convert_to_numpy(optimizer.learning_rate)) == pytest.approx(rate)
    args = config_class()
    args.resolve_defaults()
    assert {key: getattr(args, f"lr_{key}") for key in rates} == rates


# -- under a strategy: two replicas train as one ------------------------------------------------
GLOBAL_BATCH = 8
# Small models of every kind; each phase's batch: the arrays of real data it reads (x: samples,
# w: soft labels), or none when it trains on generated data only.
REPLICATED = {
    "ganem": (dict(num_clusters=3, latent_dim=4, e_batch_size=GLOBAL_BATCH), {"m_step": "xw", "e_step": ""}),
    "clustergan": (dict(num_clusters=3, latent_dim=4, n_critic=2, g_batch_size=GLOBAL_BATCH),
                   {"critic_step": "x", "generator_step": ""}),
    "gmgan": (dict(num_clusters=3, latent_dim=4, e_batch_size=GLOBAL_BATCH), {"gan_step": "x", "e_step": ""}),
    "kmgan": (dict(num_clusters=3, latent_dim=4, feature_dim=6), {"alternation_step": "x"}),
}


def test_every_model_is_checked_under_a_strategy():
    assert set(REPLICATED) == set(registry.MODELS)
    for name, (_, phases) in REPLICATED.items():
        assert tuple(phases) == registry.model_class(name).phases


def _replicated_model(name, strategy):
    arguments, _ = REPLICATED[name]
    with strategy.scope():
        model = registry.model_class(name)(SHAPE, architecture="mlp", seed=4, **arguments)
        # Plain SGD: an update proportional to the gradient shows a wrong per-replica loss
        # scaling (a factor of 2 with two replicas), which Adam's first steps would hide.
        model.compile(**{f"{key}_optimizer": keras.optimizers.SGD(0.05) for key in model.learning_rates})
    if name == "kmgan":
        model.init_centers(np.random.default_rng(1).uniform(size=(40, *SHAPE)).astype(np.float32))
    return model


def _batches(strategy, reads):
    rng = np.random.default_rng(0)
    arrays = {"x": rng.uniform(size=(GLOBAL_BATCH * 3, *SHAPE)).astype(np.float32),
              "w": rng.dirichlet(np.ones(3), size=GLOBAL_BATCH * 3).astype(np.float32)}
    dataset = tf.data.Dataset.from_tensor_slices(tuple(arrays[key] for key in reads)).batch(GLOBAL_BATCH)
    return iter(strategy.experimental_distribute_dataset(dataset))


# KM-GAN's losses are made of statistics of each replica's batch (the spread of its class means,
# the push margin, the center loss' class means), as unsynchronised batch normalisation is:
# two replicas are not one replica on the global batch. tests/test_kmgan.py checks that its
# replicas stay in step.
PER_REPLICA_STATISTICS = {"kmgan"}


@pytest.mark.parametrize("name", sorted(set(REPLICATED) - PER_REPLICA_STATISTICS))
def test_two_replicas_match_one_replica_on_the_same_global_batch(name, two_cpu_strategy):
    from trainers import common

    one = tf.distribute.OneDeviceStrategy("/cpu:0")
    single, mirrored = _replicated_model(name, one), _replicated_model(name, two_cpu_strategy)
    mirrored.set_weights(single.get_weights())
    _, phases = REPLICATED[name]
    runs = []
    for strategy, model in ((one, single), (two_cpu_strategy, mirrored)):
        steps = {phase: common.replicated_step(strategy, getattr(model, phase)) for phase in phases}
        batches = {phase: _batches(strategy, reads) for phase, reads in phases.items() if reads}
        runs.append([steps[phase](*([batches[phase]] if phase in batches else []))
                     for _ in range(2) for phase in phases])
    for a, b in zip(*runs):
        assert set(a) == set(b)
        for key in a:
            # float32 sums in another order (oneDNN, all-reduce) differ in the 4th digit at most.
            np.testing.assert_allclose(float(a[key]), float(b[key]), rtol=1e-3, atol=1e-4, err_msg=key)
    for x, y in zip(single.get_weights(), mirrored.get_weights()):
        np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-4)


# -- the export serves what the model computes -----------------------------------------------------
@pytest.mark.parametrize("name", sorted(NON_DEFAULT))
def test_exported_signatures_match_the_model(name, tmp_path):
    import json

    from export import export_servables

    model = build(name)
    if name == "kmgan":
        model.init_centers(np.random.default_rng(0).uniform(size=(40, *SHAPE)).astype(np.float32))
    paths = export_servables(model, tmp_path, metadata={"dataset": "unit-test"})
    assert set(paths) == {f"{name}_enet", f"{name}_generator"}
    enet = tf.saved_model.load(str(paths[f"{name}_enet"])).signatures["serving_default"]
    x = tf.random.stateless_uniform((4, *SHAPE), seed=[5, 6])
    out = enet(images=x)
    np.testing.assert_allclose(out["probabilities"], model.cluster_probs(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["embedding"], model.embed(x), rtol=1e-5, atol=1e-6)
    assert out["cluster"].dtype == tf.int64
    np.testing.assert_array_equal(out["cluster"], np.argmax(model.cluster_probs(x), 1))
    generator = tf.saved_model.load(str(paths[f"{name}_generator"]))
    cluster = tf.constant([0, 1, 2, 1], tf.int64)
    noise = model.sample_latent(4, seed=9)
    images = generator.signatures["serving_default"](noise=noise, cluster=cluster)["images"]
    np.testing.assert_allclose(images, model.generate(noise, cluster), rtol=1e-5, atol=1e-6)
    inputs = {"cluster": cluster, "seed": tf.constant(9, tf.int64)}
    if name == "gmgan":  # its sampling scale, 1 being the model's own
        inputs["scale"] = tf.constant(1.0)
    sampled = generator.signatures["sample"](**inputs)["images"]
    np.testing.assert_allclose(sampled, model.sample(cluster.numpy(), seed=9), rtol=1e-5, atol=1e-6)
    info = json.loads((paths[f"{name}_generator"] / "assets.extra" / "zoo.json").read_text())
    assert info["model"] == name and info["config"] == json.loads(json.dumps(model.get_config()))
