package checkpoint

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// SetChatTemplate writes template as the chat_template of dir's
// tokenizer_config.json, keeping its other fields (a missing file is
// created).
func SetChatTemplate(dir, template string) error {
	path := filepath.Join(dir, TokenizerConfigFile)
	cfg := map[string]any{}
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		if err := json.Unmarshal(data, &cfg); err != nil {
			return fmt.Errorf("set chat template: %s: %w", path, err)
		}
	case !os.IsNotExist(err):
		return fmt.Errorf("set chat template: %w", err)
	}
	cfg["chat_template"] = template
	return writeJSONAtomic(path, cfg)
}
