"""`python -m theory certify|bounds|pacbayes|compress [--quick] [--out DIR]`: the same as `convae theory ...`."""

import sys

from convae_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["theory"] + sys.argv[1:]))
