"""The programmatic wallet API: get_user_coin_balance, update_user_coin_balance."""

import pytest
from ledger import add_user, check_ledger

from workers.app.wallets import get_user_coin_balance, update_user_coin_balance


def test_add_and_subtract_move_the_balance_with_one_transaction_each(conn):
    user = add_user(conn, coins=100)
    assert update_user_coin_balance(conn, user, 50, operation="add", tx_type="bonus") == 150
    assert update_user_coin_balance(conn, user, 30) == 120
    assert get_user_coin_balance(conn, user) == 120
    kinds = [r["tx_type"] for r in conn.execute(
        "SELECT tx_type FROM user_transactions ORDER BY transaction_id")]
    assert kinds == ["purchase", "bonus", "spend"]
    check_ledger(conn)


def test_insufficient_coins_raise_and_change_nothing(conn):
    user = add_user(conn, coins=20)
    with pytest.raises(ValueError, match="insufficient coins.*has 20, needs 30"):
        update_user_coin_balance(conn, user, 30)
    assert get_user_coin_balance(conn, user) == 20
    check_ledger(conn)


@pytest.mark.parametrize("amount, operation, tx_type, message", [
    (10, "multiply", "spend", "operation"),
    (0, "add", "bonus", "amount"),
    (-5, "add", "bonus", "amount"),
    (2.5, "add", "bonus", "amount"),
    (True, "add", "bonus", "amount"),
    (10, "add", "gift", "tx_type"),
])
def test_bad_arguments_raise_value_error(conn, amount, operation, tx_type, message):
    user = add_user(conn, coins=20)
    with pytest.raises(ValueError, match=message):
        update_user_coin_balance(conn, user, amount, operation=operation, tx_type=tx_type)
    assert get_user_coin_balance(conn, user) == 20


def test_a_user_without_a_wallet(conn):
    user = conn.execute("INSERT INTO users (username, dob, phone) VALUES ('nowallet',"
                        " '2000-01-01', '+99') RETURNING user_id").fetchone()["user_id"]
    assert get_user_coin_balance(conn, user) == 0
    with pytest.raises(ValueError, match="no wallet"):
        update_user_coin_balance(conn, user, 10, operation="add", tx_type="purchase")
