"""The synthetic world, one module per source (the façade is :mod:`helpers.generate`).

* :mod:`.world` - the knobs (:class:`~.world.WorldConfig`) and the planted segment parameters, sampling
  of the population and of selection into the customer base (by age, segment *and* behaviour);
* :mod:`.places` - US state and gender per person, state x age x sex margins from the Census file;
* :mod:`.behaviour` - per-user behaviour levels: Gaussian copula with skewed heavy-tailed margins,
  zero-inflated channel use, purchase rate and ticket size;
* :mod:`.waves` - monthly engagement states from a planted segment-specific Markov chain (churned
  absorbing), monthly minutes, the observed business label, and the 22-column snapshot derived from them;
* :mod:`.transactions` - the purchase log (over-dispersed counts, state-driven dropout, lognormal ticket
  sizes correlated with frequency: deliberately not BG/NBD or Gamma-Gamma);
* :mod:`.future` - outcomes after the observation date (truth only);
* ``exposures.py`` (media exposures) and ``posts.py`` (social posts) are added by their own issues: each
  is one more module here taking the simulated world (:class:`~.world.World`) and returning its frames.
"""

from .world import World, WorldConfig, simulate  # noqa: F401
