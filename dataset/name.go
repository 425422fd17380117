package dataset

import "github.com/largeforge/largeforge/schemas"

// ValidateName checks that name can be a NATS subject token and a storage
// key element (schemas.ValidateDatasetName); its errors wrap ErrInvalidName.
func ValidateName(name string) error { return schemas.ValidateDatasetName(name) }
