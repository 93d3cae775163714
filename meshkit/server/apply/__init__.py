from meshkit.server.apply.applier import Applier, is_txn_readonly

__all__ = ["Applier", "is_txn_readonly"]
