"""The QuantizedModel API: spec and status as pydantic models, the CRD generated from them, and
the checks that CEL cannot express. Pure: no I/O."""
