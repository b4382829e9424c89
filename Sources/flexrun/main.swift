print("flexrun: not yet")
