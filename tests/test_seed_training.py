"""The seed's training loop, copied verbatim with only its imports changed to fastbp, reaches
the seed's accuracy on real MNIST (about 97% on the test set)."""

import numpy as np

from mnist import requires_mnist


@requires_mnist
def test_seed_training_loop_reaches_97_percent(capsys):
    from fastbp.data import load_mnist
    from fastbp.nets import TwoLayerNet

    np.random.seed(0)
    (x_train, t_train), (x_test, t_test) = load_mnist(normalize=True, one_hot_label=True)
    network = TwoLayerNet(input_size=784, hidden_size=50, output_size=10)

    # ---- the seed's loop, verbatim ----
    # Train Parameters
    iters_num = 10000
    train_size = x_train.shape[0]
    batch_size = 100
    learning_rate = 0.1
    iter_per_epoch = max(train_size / batch_size, 1)

    train_loss_list, train_acc_list, test_acc_list = [], [], []

    for step in range(1, iters_num+1):
        # get mini-batch
        batch_mask = np.random.choice(train_size, batch_size)
        x_batch = x_train[batch_mask]
        t_batch = t_train[batch_mask]

        # 기울기 계산
        # grad = network.numerical_gradient(x_batch, t_batch) # 수차 미분 방식
        grad = network.gradient(x_batch, t_batch) # 오차역전파법 방식(압도적으로 빠르다)

        # Update
        for key in ('W1', 'b1', 'W2', 'b2'):
            network.params[key] -= learning_rate * grad[key]

        # loss
        loss = network.loss(x_batch, t_batch)
        train_loss_list.append(loss)

        if step % iter_per_epoch == 0:
            train_acc = network.accuracy(x_train, t_train)
            test_acc = network.accuracy(x_test, t_test)
            train_acc_list.append(train_acc)
            test_acc_list.append(test_acc)
            print('Step: {:4d} \t Train acc: {:.5f} \t Test acc: {:.5f}'.format(step,
                                                                               train_acc,
                                                                               test_acc))
    # ---- end of the seed's loop ----

    assert len(test_acc_list) == 16
    assert test_acc_list[-1] >= 0.965, capsys.readouterr().out
    assert train_loss_list[-1] < train_loss_list[0] / 5
