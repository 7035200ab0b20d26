//go:build !unix

package vpcd

import (
	"context"
	"fmt"
)

func lockFile(ctx context.Context, path string) (func(), error) {
	return nil, fmt.Errorf("%w: vpcd runs on Linux only", ErrUnavailable)
}
