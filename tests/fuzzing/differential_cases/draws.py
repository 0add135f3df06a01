"""Random draws both case generators share."""
import random


def pick_density(rng: random.Random, small: float) -> float:
    """Exactly 0 and exactly 1 sometimes, else uniform, often below `small`."""
    kind = rng.choices(["zero", "one", "any", "low"], [1, 1.5, 4, 3.5])[0]
    return {"zero": 0.0, "one": 1.0, "any": rng.random(), "low": rng.uniform(0.0, small)}[kind]
