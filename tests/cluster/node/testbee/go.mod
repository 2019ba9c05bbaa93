module colony-operator/node/testbee

go 1.22
