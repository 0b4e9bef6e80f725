"""The job service: the `Service` front and the parts it is made of (intake, scheduler and
fair queue, costs and ETA, dispatcher, deliverer, notices, handlers with their context)."""
