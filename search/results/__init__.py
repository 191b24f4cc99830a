"""Reading and using results: a study's status and best trials, TEST evaluation, replication,
comparison, reports, prediction and export, feature maps, the UIs."""
