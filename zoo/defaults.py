"""Defaults the models (Python API) and their trainers (command line) share, in one place.

Free of TensorFlow, so that a trainer can build its flags and check them before importing it.
"""

# Adam learning rate of each network, by zoo name: g = generator, d = discriminator (ClusterGAN's
# critic), e = E-net or encoder. `Model.compile()` without optimizers uses them, and so do the
# trainers' --lr-g / --lr-d / --lr-e defaults.
LEARNING_RATES = {
    # G and D as the authors' code (2e-4 x 3 and x 1); the E-net at D's rate (the code's: 6e-5).
    "ganem": {"g": 6e-4, "d": 2e-4, "e": 2e-4},
    # Twice the paper's 1e-4 (--paper restores it): per step the largest lever on a CPU-sized run.
    "clustergan": {"g": 2e-4, "d": 2e-4, "e": 2e-4},
    # InfoGAN's MNIST rates; with G at D's rate, G collapsed each Gaussian to one image.
    "gmgan": {"g": 1e-3, "d": 2e-4, "e": 2e-4},
    # DCGAN's.
    "kmgan": {"g": 2e-4, "d": 2e-4},
}
