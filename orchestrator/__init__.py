"""What users touch: sweep specs, Ray Tune, MLflow run lifecycle, the CLI. The only package that knows Ray."""
