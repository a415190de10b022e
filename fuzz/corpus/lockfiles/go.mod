module example.com/app

go 1.21

require (
	github.com/gin-gonic/gin v1.9.0
	golang.org/x/net v0.7.0 // indirect
)

require github.com/x/y v0.1.0

replace github.com/x/y => ../y
