import harness_bridge as hb
def create(model, options):
    raise hb.UsageError("this adapter is not written yet")
