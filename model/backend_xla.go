//go:build xla

package model

// Built with -tags xla, the XLA backend is compiled in (it needs cgo and a
// PJRT plugin at run time): select it with GOMLX_BACKEND=xla:cpu, or
// xla:<plugin name or path>, or WithBackend. Without the tag only the pure
// Go backend exists, and no cgo or download is involved.

import _ "github.com/gomlx/gomlx/backends/xla" // registers "xla"
