"""
The statistics of the policy tests, sans I/O: whether counts of selections
fit the distribution a randomized policy promises.

A chi-square goodness-of-fit test at a fixed, small significance level
(1 in 10,000): a conforming implementation fails it that rarely, while a
policy that ignores its weights or loads (uniform instead of weighted, one
PE always) fails it for the sample sizes the suite uses (a few hundred
selections).
"""

__all__ = ["chi_square", "CRITICAL", "fits"]

#: Critical values of the chi-square distribution at p = 0.0001, by
#: degrees of freedom.
CRITICAL = {1: 15.137, 2: 18.421, 3: 21.108, 4: 23.513, 5: 25.745, 6: 27.856, 7: 29.878}


def chi_square(observed, weights):
    """
    The chi-square statistic of C{observed} counts against the
    distribution proportional to C{weights}.

    @param observed: counts, one per category.
    @param weights: non-negative weights, one per category (not all 0).
    @rtype: C{float}
    """
    if len(observed) != len(weights):
        raise ValueError("one weight per category")
    total = sum(observed)
    mass = float(sum(weights))
    statistic = 0.0
    for count, weight in zip(observed, weights):
        expected = total * weight / mass
        if expected == 0:
            if count:
                return float("inf")
            continue
        statistic += (count - expected) ** 2 / expected
    return statistic


def fits(observed, weights):
    """
    Whether C{observed} fits C{weights} at p = 0.0001.

    @return: C{(fits, statistic, critical value)}.
    """
    df = sum(1 for w in weights if w) - 1
    if df < 1:
        return (all(c == 0 for c, w in zip(observed, weights) if not w), 0.0, 0.0)
    critical = CRITICAL[df]
    statistic = chi_square(observed, weights)
    return (statistic <= critical, statistic, critical)
