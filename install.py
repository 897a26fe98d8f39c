"""Run by the webui at launch. ToDo needs only torch, which every webui already ships: nothing to install."""
