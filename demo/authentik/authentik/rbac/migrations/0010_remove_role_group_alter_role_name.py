# Migration fixture: the dependency line the seed extends (authentik issue 19616).

dependencies = [
    ("authentik_rbac", "0009_remove_initialpermissions_mode"),
]
operations = []
