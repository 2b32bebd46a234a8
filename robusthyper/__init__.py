"""robusthyper: honest adversarial-robustness and uncertainty evaluation of Bayesian neural networks.

Heavy dependencies (torch, ART) are imported by the submodules that need them, never here, so that
`robusthyper --help` stays instant.
"""

__version__ = "0.1.0"
