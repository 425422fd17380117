// Package schemas defines the data dictionary (DATA_DICTIONARY.md) as Go types: training records, configs, API structures, metrics and log records, with the dictionary's JSON Schemas, validation rules and exact error messages, and the Arrow schemas of each record kind. It does no I/O.
package schemas
