"""Services: the application's logic. Routes call services; services call
flux / storage / db. Data flows one way."""
