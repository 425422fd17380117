package schemas

import (
	"errors"
	"testing"
)

func TestValidateDatasetName(t *testing.T) {
	tests := []struct {
		name    string
		wantErr bool
	}{
		{"chat-v1", false}, {"A_9", false}, {"", true}, {"../etc", true}, {"a.b", true}, {"a b", true}, {"_lead", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateDatasetName(tt.name)
			if (err != nil) != tt.wantErr || (err != nil && !errors.Is(err, ErrInvalidDatasetName)) {
				t.Fatalf("ValidateDatasetName(%q) = %v", tt.name, err)
			}
		})
	}
}
