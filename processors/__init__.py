"""Stream processing: normalize provider records, reconcile them per payment, schedule fetches."""
