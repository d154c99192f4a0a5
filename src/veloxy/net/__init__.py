"""The only code that touches asyncio transports: server and client connections, listeners,
loop selection and the coarse timer wheel that serves every connection's deadlines."""
