"""The default configs namespace: `himl-runner --model=Name` searches every module in here."""
